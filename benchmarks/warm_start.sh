#!/usr/bin/env bash
# Seconds from the command's start to the compiled train step and to the end of the first step
# when a run resumes, with JAX's persistent compilation cache off (cold) and on (warm). Usage,
# after the Quickstart's run:
#
#     bash benchmarks/warm_start.sh /tmp/attrdis_demo [OUT]
#
# Each mode copies the workdir to OUT/<mode> (default OUT: a temporary folder), drops its
# step-1500 checkpoint, resumes from step 1000 and stops after step 1050 (SIGTERM saves one).
# The warm mode uses the default cache, which the Quickstart's run filled.
set -euo pipefail
src=${1:?usage: warm_start.sh WORKDIR [OUT]}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
cd "$(dirname "$0")/.."
for mode in cold warm; do
  w=$out/$mode
  rm -rf "$w"; cp -r "$src" "$w"; rm -rf "$w/checkpoints/1500"
  flag=(); [ $mode = cold ] && flag=(--compilation_cache=none)
  log=$out/$mode.log
  start=$(date +%s.%N)
  python run_train.py --config=configs/synthetic.py --workdir="$w" "${flag[@]}" > "$log" 2>&1 &
  pid=$!
  until grep -q "lowered and compiled" "$log"; do
    kill -0 $pid 2>/dev/null || { echo "error: the run stopped early; see $log" >&2; exit 1; }
    sleep 0.2
  done
  compiled=$(date +%s.%N)
  until grep -q "First step" "$log"; do sleep 0.05; done
  first=$(date +%s.%N)
  until grep -q "^step 1050/" "$log"; do sleep 0.2; done
  kill -TERM $pid; wait $pid || true
  echo "$mode: $(python -c "print(round($compiled - $start, 1))") s from the start to the compiled step" \
       "($(grep -o 'compiled in [0-9.]* s' "$log")), $(python -c "print(round($first - $start, 1))") s" \
       "to the end of the first step"
done

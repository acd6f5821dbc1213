#!/usr/bin/env bash
# Seconds from the command's start to the compiled train step and to the end of the first step
# when a run resumes, with JAX's persistent compilation cache off (cold) and on (warm). Usage,
# after the Quickstart's run:
#
#     bash benchmarks/warm_start.sh /tmp/attrdis_demo [OUT] [RUNS]
#
# Each run copies the workdir to OUT/<mode> (default OUT: a temporary folder), drops its
# step-1500 checkpoint, resumes from step 1000 and is stopped by SIGTERM once its first step
# is done. RUNS runs per mode (default 5), one after another; each run's seconds, then the
# median and range of each mode. The warm mode uses the default cache, which the Quickstart's
# run filled (its first run also compiles what the Quickstart did not need, if anything).
set -euo pipefail
src=${1:?usage: warm_start.sh WORKDIR [OUT] [RUNS]}
out=${2:-$(mktemp -d)}
runs=${3:-5}
mkdir -p "$out"
cd "$(dirname "$0")/.."
summary() {  # MODE WHAT SECONDS...
  python - "$@" <<'EOF'
import statistics, sys
mode, what, *xs = sys.argv[1:]
xs = [float(x) for x in xs]
print(f"{mode}: {what}: median {statistics.median(xs):.1f} s "
      f"({min(xs):.1f}-{max(xs):.1f}, {len(xs)} runs)")
EOF
}
wait_for() {  # PATTERN: until the run's log has a line with it (the run must still be running)
  until grep -q "$1" "$log"; do
    kill -0 $pid 2>/dev/null || { echo "error: the run stopped early; see $log" >&2; exit 1; }
    sleep 0.05
  done
}
for mode in cold warm; do
  compiled_all=(); first_all=()
  for i in $(seq "$runs"); do
    w=$out/$mode
    rm -rf "$w"; cp -r "$src" "$w"; rm -rf "$w/checkpoints/1500"
    flag=(); [ $mode = cold ] && flag=(--compilation_cache=none)
    log=$out/$mode.log
    : > "$log"  # emptied before the run starts (the check below must not read the last run's)
    start=$(date +%s.%N)
    python run_train.py --config=configs/synthetic.py --workdir="$w" "${flag[@]}" > "$log" 2>&1 &
    pid=$!
    wait_for "lowered and compiled"
    compiled=$(date +%s.%N)
    wait_for "First step"
    first=$(date +%s.%N)
    kill -TERM $pid; wait $pid || true
    compiled=$(python -c "print(round($compiled - $start, 2))")
    first=$(python -c "print(round($first - $start, 2))")
    echo "$mode run $i: ${compiled} s to the compiled step ($(grep -o 'compiled in [0-9.]* s' "$log")), ${first} s to the end of the first step"
    compiled_all+=("$compiled"); first_all+=("$first")
  done
  summary "$mode" "to the compiled step" "${compiled_all[@]}"
  summary "$mode" "to the end of the first step" "${first_all[@]}"
done

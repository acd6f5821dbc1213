#!/usr/bin/env bash
# The full-size synthetic run on one accelerator: trains configs/synthetic.py:paper (the
# paper's model and schedule at 64 px, 18,750 steps), evaluates the last checkpoint and copies
# what a reader needs into OUT (at most 8 files). Usage:
#
#     bash benchmarks/full_size_run.sh OUT [--config.FIELD=VALUE ...]
#
# Environment: FULL_RUN_TRAIN_S (default 420) bounds the training: at that time the trainer gets
# SIGTERM, saves a checkpoint at its current step and exits, and the evaluation runs on that
# step (the JSON names it). FULL_RUN_EVAL_ARGS adds evaluator flags (e.g.
# "--classifier_steps=100" for a quick check). WORKDIR (default /tmp/attrdis_full) is the
# training workdir; a second call resumes there.
#
# OUT receives: eval.json (every metric), eval.txt (the table), metrics.jsonl, the last sample
# grid (samples.png), transfer.png (the evaluator's ground-truth transfers), train.log (tail),
# eval.log (tail), summary.txt (the steps reached and each part's exit status).
set -uo pipefail
out=${1:?usage: full_size_run.sh OUT [--config.FIELD=VALUE ...]}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
workdir=${WORKDIR:-/tmp/attrdis_full}
train_s=${FULL_RUN_TRAIN_S:-420}

start=$SECONDS
timeout --signal=TERM --kill-after=120 "$train_s" \
    python run_train.py --config=configs/synthetic.py:paper --workdir="$workdir" "$@" \
    > "$workdir.train.log" 2>&1
train_rc=$?
train_took=$((SECONDS - start))

start=$SECONDS
# shellcheck disable=SC2086
python -m attrdis.evaluate --workdir="$workdir" ${FULL_RUN_EVAL_ARGS:-} \
    > "$out/eval.txt" 2> "$workdir.eval.log"
eval_rc=$?
eval_took=$((SECONDS - start))

step=$(ls "$workdir/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1)
[ -n "$step" ] && cp "$workdir/eval/$step.json" "$out/eval.json" 2>/dev/null
[ -n "$step" ] && cp "$workdir/eval/transfer_$step.png" "$out/transfer.png" 2>/dev/null
cp "$workdir/metrics.jsonl" "$out/metrics.jsonl" 2>/dev/null
grid=$(ls "$workdir/samples"/step_*.png 2>/dev/null | sort | tail -1)
[ -n "$grid" ] && cp "$grid" "$out/samples.png"
tail -c 20000 "$workdir.train.log" > "$out/train.log"
tail -c 20000 "$workdir.eval.log" > "$out/eval.log"
{
  echo "config: configs/synthetic.py:paper $*"
  echo "train: exit $train_rc after ${train_took} s (124/143: stopped by the time budget)"
  echo "last checkpoint: step ${step:-none}"
  echo "evaluate: exit $eval_rc after ${eval_took} s"
  python -c "import jax; print('devices:', jax.devices())" 2>/dev/null
} > "$out/summary.txt"
cat "$out/summary.txt"

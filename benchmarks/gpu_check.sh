#!/usr/bin/env bash
# One-shot GPU check: the attrdis train step at the paper's size (configs/multipie.py,
# 128 px, batch 16, M = 3) in float32 and bfloat16, the PyTorch peer at 128 px (float32 and
# --bf16), then the evaluator and the input pipeline. Every part has its own timeout and the
# whole script a deadline (GPU_CHECK_BUDGET_S, default 330 s): a part that fails or times out
# is logged and the script goes on. Run from the repository root:
#
#   bash benchmarks/gpu_check.sh            # results under $OUT (./gpu_out if OUT is unset)
#   GPU_CHECK_PARTS="train_bf16 eval input" bash benchmarks/gpu_check.sh   # some parts only
#
# Parts: train_bf16, torch (the peer, bf16 and f32), train_f32, eval, input, batches (bf16 at
# per-device batches 64 and 256, BATCH_SIZES, into one batches.json; last, so that a short
# budget spends itself on the others first: give it GPU_CHECK_BUDGET_S=480).
# GPU_CHECK_BENCH_ARGS: more --config overrides for every attrdis.benchmark run (e.g. a tiny
# model, to try the script on a CPU).
#
# Needs (carried in .whl/, see docs/performance.md#the-gpu-check): ml_collections (+ the input
# pipeline's wheels) and optionally torch_ref.py; jax with CUDA, flax, optax and torch are the
# machine's.
# TORCH_REF: the path of the PyTorch peer, torch_ref.py (not part of this repository; default:
# .whl/torch_ref.py, benchmarks/torch_ref.py, shared/peers/torch_ref.py or
# ../shared/peers/torch_ref.py, the first that exists). Without it the torch part is skipped
# with a one-line message.
# At most 8 files come back from $OUT: gpu_check.log, train_bf16.json,
# train_f32.json, torch_peer.log, eval.json, input.json, batches.json, summary.txt (8 files).

set -x
set -o pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-330}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false

PARTS=" ${GPU_CHECK_PARTS:-train_bf16 torch train_f32 eval input batches} "
want() { [[ "$PARTS" == *" $1 "* ]]; }

remaining() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# run_part NAME LIMIT_S CMD...: runs CMD with timeout min(LIMIT, remaining - 5); skips when
# under 15 s are left. Never stops the script.
run_part() {
  local name=$1 limit=$2; shift 2
  local left; left=$(remaining)
  if (( left - 5 < limit )); then limit=$(( left - 5 )); fi
  if (( limit < 15 )); then
    echo "=== SKIP $name: only ${left}s of the budget left"
    echo "$name: skipped (budget)" >> "$OUT/summary.txt"
    return 0
  fi
  echo "=== BEGIN $name (limit ${limit}s, t=$(( $(date +%s) - T0 ))s)"
  local t=$(date +%s)
  timeout --signal=TERM --kill-after=5 "$limit" "$@"
  local rc=$?
  echo "=== END $name rc=$rc in $(( $(date +%s) - t ))s"
  echo "$name: rc=$rc $(( $(date +%s) - t ))s" >> "$OUT/summary.txt"
  return 0
}

# --- the machine -----------------------------------------------------------------------------
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
$PY -c "import sys; print(sys.version)" || true
$PY -m pip list 2>/dev/null | grep -i -E "^(jax|jaxlib|jax-cuda|flax|optax|torch|numpy|protobuf|etils) " || true

# --- Python packages: carried wheels into /tmp/site_core (train/eval) and /tmp/site_input ---
SITE_CORE=/tmp/site_core SITE_INPUT=/tmp/site_input SITE_PIN=/tmp/site_pin
mkdir -p $SITE_CORE $SITE_INPUT $SITE_PIN
PIP="$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade"
if ls .whl/ml_collections-*.whl >/dev/null 2>&1; then
  $PIP --target $SITE_CORE .whl/ml_collections-*.whl || true
  # Everything for the input pipeline except the pinned flax/optax (the machine's are used).
  ls .whl/*.whl | grep -v -E "/(flax|optax)-" | xargs $PIP --target $SITE_INPUT || true
  ls .whl/flax-*.whl .whl/optax-*.whl >/dev/null 2>&1 && $PIP --target $SITE_PIN .whl/flax-*.whl .whl/optax-*.whl || true
else
  echo "NOTE: no .whl/ml_collections-*.whl: relying on the machine's packages"
fi
# The TFDS builders are the package attrdis_datasets (the repo's datasets/ folder).
ln -sfn "$PWD/datasets" $SITE_INPUT/attrdis_datasets

export PYTHONPATH=$PWD:$SITE_CORE

# Start building the synthetic 128 px dataset now (CPU only, single process) for the input
# part at the end; TFDS data goes to /tmp/tfds.
want input && ( PYTHONPATH=$PWD:$SITE_INPUT:$SITE_CORE timeout 240 $PY -c "
from attrdis_datasets.synthetic_faces import synthetic_faces_dataset_builder as sf
import time; t = time.time()
sf.Builder(config='128px', data_dir='/tmp/tfds', file_format='array_record').download_and_prepare()
print('synthetic_faces/128px built in %.1f s' % (time.time() - t))
" > /tmp/tfds_build.log 2>&1 & )

BENCH="$PY -m attrdis.benchmark --config=configs/multipie.py --config.image_size=128 ${GPU_CHECK_BENCH_ARGS:-}"

# --- the paper-size train step in bfloat16 (the MFU target). If it fails fast (e.g. the
# machine's flax/optax do not fit this code), retry once with the carried flax 0.12.8/optax 0.2.8.
TRAIN_BF16="$BENCH --config.dtype=bfloat16 ${TRAIN_BF16_ARGS:---steps=10 --window=10 --profile_dir=/tmp/prof_bf16}"
t=$(date +%s)
want train_bf16 && run_part train_bf16 ${TRAIN_LIMIT_S:-150} $TRAIN_BF16 --output="$OUT/train_bf16.json"
if want train_bf16 && ! grep -q '"images_per_s"' "$OUT/train_bf16.json" 2>/dev/null \
   && (( $(date +%s) - t < 60 )) && [ -n "$(ls $SITE_PIN 2>/dev/null)" ]; then
  echo "train_bf16 failed fast with the machine's flax/optax: retrying with the carried ones"
  export PYTHONPATH=$PWD:$SITE_PIN:$SITE_CORE
  run_part train_bf16_pinned 150 $TRAIN_BF16 --output="$OUT/train_bf16.json"
fi

# --- the PyTorch peer at 128 px, then float32 for both -----------------------------------------
PEER=""
for p in "${TORCH_REF:-}" .whl/torch_ref.py benchmarks/torch_ref.py shared/peers/torch_ref.py \
         ../shared/peers/torch_ref.py; do
  if [ -n "$p" ] && [ -f "$p" ]; then PEER=$p; break; fi
done
TORCH="env -u PYTHONPATH $PY $PEER --size 128 --batch 16 --classes 337,4,20 --steps 6 --device cuda"
[ -n "$PEER" ] || echo "torch_ref.py not found: set TORCH_REF=/path/to/torch_ref.py or copy it to .whl/ (the torch part is skipped)"
want torch && [ -n "$PEER" ] && run_part torch_bf16 60 $TORCH --bf16 >> "$OUT/torch_peer.log" 2>&1
want train_f32 && run_part train_f32 110 $BENCH --config.dtype=float32 --steps=8 --window=10 \
  --output="$OUT/train_f32.json"
want torch && [ -n "$PEER" ] && run_part torch_f32 60 $TORCH >> "$OUT/torch_peer.log" 2>&1
grep -E "RESULT|=== |Error" "$OUT/torch_peer.log" || true

# --- the evaluator (translation, Inception features, classifiers), bf16 and batch 64 -------
want eval && run_part eval ${EVAL_LIMIT_S:-70} $BENCH --part=eval --config.dtype=bfloat16 --eval_batch=64 --steps=5 --window=5 \
  --output="$OUT/eval.json"

# --- the input pipeline: grain over the synthetic 128 px TFDS data (built in the background) --
want input && for i in $(seq 1 30); do
  grep -q "built in" /tmp/tfds_build.log 2>/dev/null && break
  (( $(remaining) < 40 )) && break
  sleep 2
done
want input && cat /tmp/tfds_build.log
want input && PYTHONPATH=$PWD:$SITE_INPUT:$SITE_CORE run_part input 45 $PY -m attrdis.benchmark \
  --part=input --config=configs/synthetic.py --config.dataset.builder_config=128px --config.image_size=128 \
  --config.dataset.data_dir=/tmp/tfds --config.dataset.num_workers=8 --batches=200 \
  --train_json="$OUT/train_bf16.json" --output="$OUT/input.json"

# --- bf16 at larger per-device batches: a row each in the performance table ---------------
if want batches; then
  rm -f /tmp/gpu_check_batch_*.json
  for b in ${BATCH_SIZES:-64 256}; do
    run_part "batch_$b" ${BATCH_LIMIT_S:-90} $BENCH --config.dtype=bfloat16 --config.batch_size=$b \
      --steps=6 --window=5 --output="/tmp/gpu_check_batch_$b.json"
  done
  $PY - ${BATCH_SIZES:-64 256} > "$OUT/batches.json" <<'EOF' || true
import json, sys
rows = []
for b in sys.argv[1:]:
  try:
    rows.append(json.load(open(f"/tmp/gpu_check_batch_{b}.json")))
  except Exception as e:  # the part failed or was skipped: say so in its row
    rows.append({"batch_size": int(b), "error": f"no result ({e})"})
print(json.dumps(rows, indent=1))
EOF
fi

echo "=== total $(( $(date +%s) - T0 ))s"
cat "$OUT/summary.txt"
for f in train_bf16 train_f32; do
  $PY - "$OUT/$f.json" <<'EOF' || true
import json, sys
try:
  r = json.load(open(sys.argv[1]))
  print(sys.argv[1], {k: r.get(k) for k in ("dtype", "compile_s", "images_per_s", "flops_per_step",
        "achieved_flops_per_s", "peak_flops_per_s", "mfu", "mfu_vs_spec", "peak_memory_bytes")})
except Exception as e:
  print(sys.argv[1], "unreadable:", e)
EOF
done
exit 0

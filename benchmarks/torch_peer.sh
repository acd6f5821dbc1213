#!/usr/bin/env bash
# The PyTorch peer (../shared/peers/torch_ref.py, not part of the project) on this CPU, next to
# `python -m attrdis.benchmark` at the same size. torch lives in its own venv, /tmp/torchpeer.
#
#   bash benchmarks/torch_peer.sh [SIZE] [BATCH] [STEPS]     # defaults: 64 16 3
set -euo pipefail
SIZE=${1:-64} BATCH=${2:-16} STEPS=${3:-3}
PEER=${TORCH_REF:-$(dirname "$0")/../../shared/peers/torch_ref.py}
[ -f "$PEER" ] || PEER=/work/shared/peers/torch_ref.py
if [ ! -x /tmp/torchpeer/bin/python ]; then
  python3 -m venv /tmp/torchpeer
  /tmp/torchpeer/bin/pip install -q torch==2.13.0 numpy
fi
echo "load: $(uptime)"
/tmp/torchpeer/bin/python "$PEER" --size "$SIZE" --batch "$BATCH" --classes 337,4,20 \
  --steps "$STEPS" --threads "$(nproc)"
echo "load: $(uptime)"

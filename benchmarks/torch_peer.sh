#!/usr/bin/env bash
# The PyTorch peer (torch_ref.py, an eager PyTorch implementation of the same training
# iteration; not part of this repository) on this CPU, next to `python -m attrdis.benchmark` at
# the same size. torch lives in its own venv, /tmp/torchpeer. See docs/performance.md.
#
#   bash benchmarks/torch_peer.sh [SIZE] [BATCH] [STEPS]     # defaults: 64 16 3
#
# TORCH_REF: the path of torch_ref.py (default: ../shared/peers/torch_ref.py beside the
# repository); the script stops with a one-line error when the file is not there.
set -euo pipefail
SIZE=${1:-64} BATCH=${2:-16} STEPS=${3:-3}
PEER=${TORCH_REF:-$(dirname "$0")/../../shared/peers/torch_ref.py}
if [ ! -f "$PEER" ]; then
  echo "error: the PyTorch peer torch_ref.py is not at $PEER: set TORCH_REF=/path/to/torch_ref.py" >&2
  exit 1
fi
if [ ! -x /tmp/torchpeer/bin/python ]; then
  python3 -m venv /tmp/torchpeer
  /tmp/torchpeer/bin/pip install -q torch==2.13.0 numpy
fi
echo "load: $(uptime)"
/tmp/torchpeer/bin/python "$PEER" --size "$SIZE" --batch "$BATCH" --classes 337,4,20 \
  --steps "$STEPS" --threads "$(nproc)"
echo "load: $(uptime)"

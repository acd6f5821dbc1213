r"""Training curves side by side, as Markdown: one row per logged step, one column per run.

    python benchmarks/curves.py METRIC NAME=WORKDIR [NAME=WORKDIR ...] [--every=N]

METRIC is a key of the runs' ``metrics.jsonl`` (e.g. ``eval/recon/psnr``, logged every
``config.eval_every_steps``; ``acc_trn/expression``, every ``config.log_every_steps``). Steps
where no run logged METRIC are left out; ``--every=N`` keeps only steps divisible by N.
"""

from __future__ import annotations

import json
import os
import sys


def read_curve(workdir: str, metric: str) -> dict[int, float]:
  """{step: value} of ``metric`` in ``workdir/metrics.jsonl`` (the last row wins per step)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no metrics.jsonl; is {workdir} a training workdir?")
  curve = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if metric in row:
        curve[int(row["step"])] = float(row[metric])
  return curve


def table(metric: str, runs: list[tuple[str, dict[int, float]]], every: int = 1) -> str:
  steps = sorted({s for _, c in runs for s in c if s % every == 0})
  lines = [f"| step | {' | '.join(name for name, _ in runs)} |",
           "|---" * (len(runs) + 1) + "|"]
  for s in steps:
    cells = [f"{c[s]:.4g}" if s in c else "" for _, c in runs]
    lines.append(f"| {s} | {' | '.join(cells)} |")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  every = 1
  args = []
  for a in argv:
    if a.startswith("--every="):
      every = int(a.split("=", 1)[1])
    else:
      args.append(a)
  if len(args) < 2 or any("=" not in a for a in args[1:]):
    print(__doc__, file=sys.stderr)
    return 2
  metric = args[0]
  try:
    runs = [(name, read_curve(w, metric))
            for name, w in (a.rsplit("=", 1) for a in args[1:])]
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  missing = [name for name, c in runs if not c]
  if len(missing) == len(runs):
    print(f"error: no run logged {metric!r}", file=sys.stderr)
    return 1
  print(table(metric, runs, every))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

r"""Training curves side by side, as Markdown: one row per logged step, one column per run.

    python benchmarks/curves.py METRIC NAME=WORKDIR [NAME=WORKDIR ...] [--every=N]

METRIC is a key of the runs' ``metrics.jsonl`` (e.g. ``eval/recon/psnr``, logged every
``config.eval_every_steps``; ``acc_trn/expression``, every ``config.log_every_steps``). Steps
where no run logged METRIC are left out; ``--every=N`` keeps only steps divisible by N. An error
is one ``error: ...`` line (status 1; 2 for a bad command line).
"""

from __future__ import annotations

import json
import os

from absl import flags

from attrdis import cli
from attrdis import errors

FLAGS = flags.FlagValues()
flags.DEFINE_integer(
  "every", 1, "Keep only the steps divisible by N.", lower_bound=1, flag_values=FLAGS
)


def read_curve(workdir: str, metric: str) -> dict[int, float]:
  """{step: value} of ``metric`` in ``workdir/metrics.jsonl`` (the last row wins per step)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise errors.InputError(f"{path}: no metrics.jsonl; is {workdir} a training workdir?")
  curve = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if metric in row:
        curve[int(row["step"])] = float(row[metric])
  return curve


def table(metric: str, runs: list[tuple[str, dict[int, float]]], every: int = 1) -> str:
  steps = sorted({s for _, c in runs for s in c if s % every == 0})
  lines = [f"| step | {' | '.join(name for name, _ in runs)} |", "|---" * (len(runs) + 1) + "|"]
  for s in steps:
    cells = [f"{c[s]:.4g}" if s in c else "" for _, c in runs]
    lines.append(f"| {s} | {' | '.join(cells)} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  """absl's main: ``argv[1:]`` are METRIC and the NAME=WORKDIR columns."""
  args = argv[1:]
  if len(args) < 2 or any("=" not in a for a in args[1:]):
    raise errors.CommandLineError("give METRIC NAME=WORKDIR [NAME=WORKDIR ...] (see --help)")
  metric = args[0]
  runs = [(name, read_curve(w, metric)) for name, w in (a.rsplit("=", 1) for a in args[1:])]
  if not any(c for _, c in runs):
    raise errors.InputError(f"no run logged {metric!r}")
  print(table(metric, runs, FLAGS.every))


if __name__ == "__main__":
  cli.run(main, FLAGS, positional=True)

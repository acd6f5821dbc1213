r"""Results tables: evaluator JSONs side by side, as Markdown.

    python benchmarks/eval_table.py NAME=W/eval/STEP.json [NAME=A.json,B.json,C.json ...]

Each argument is a column: a name and the JSON(s) that ``python -m attrdis.evaluate`` wrote.
A column of several JSONs (runs with different seeds) shows each metric's mean ± standard
deviation over them (the sample standard deviation, n − 1 in the denominator). Rows are the headline metrics of every family:
reconstruction, ground truth per attribute set (with the skill 1 − L1/L1 of returning the
source), transfer accuracy and its share of the evaluation networks' ceiling, intensity,
where each attribute comes from, Table IV synthesis, Table III Hopkins, Fig. 5 entropy and
k-NN leakage; then the trivial answers and the readers' ceiling of each column (they do not
depend on the model, but on the test images and the evaluation networks). An error is one ``error: ...`` line (status 1; 2 for a bad command
line).
"""

from __future__ import annotations

import json

from absl import flags
import numpy as np

from attrdis import cli
from attrdis import errors

FLAGS = flags.FlagValues()  # no flags of its own: the columns are positional

PCT, F2, F3, F4 = "{:.1%}", "{:.2f}", "{:.3f}", "{:.4f}"
ROWS = [
  ("Reconstruction PSNR (dB) ↑", "recon/psnr", F2),
  ("Ground truth, all attribute sets: L1 of the transfer ↓", "gt/all/l1", F4),
  ("Skill 1 − L1/L1(return source), mean over sets ↑", "gt/all/skill", F3),
  ("  identity only ↑", "gt/identity/skill", F3),
  ("  expression only ↑", "gt/expression/skill", F3),
  ("  illumination only ↑", "gt/illumination/skill", F3),
  ("  gaze only ↑", "gt/gaze/skill", F3),
  ("  colour only ↑", "gt/color/skill", F3),
  ("Skill where the truth leaves the source, mean over sets ↑", "gt/all/skill_changed", F3),
  ("  identity only ↑", "gt/identity/skill_changed", F3),
  ("  expression only ↑", "gt/expression/skill_changed", F3),
  ("  illumination only ↑", "gt/illumination/skill_changed", F3),
  ("  gaze only ↑", "gt/gaze/skill_changed", F3),
  ("  colour only ↑", "gt/color/skill_changed", F3),
  ("Transferred attributes read as the target's ↑", "transfer/all/acc_transferred", PCT),
  ("Kept attributes read as the source's ↑", "transfer/all/acc_kept", PCT),
  ("  identity transferred ↑", "transfer/identity/acc/identity", PCT),
  ("  expression transferred ↑", "transfer/expression/acc/expression", PCT),
  ("  illumination transferred ↑", "transfer/illumination/acc/illumination", PCT),
  ("  gaze transferred ↑", "transfer/gaze/acc/gaze", PCT),
  ("  colour transferred ↑", "transfer/color/acc/color", PCT),
  (
    "Worst transferred attribute, share of the readers' ceiling ↑",
    "transfer/all/of_ceiling_transferred_min",
    PCT,
  ),
  (
    "Worst kept attribute, share of the readers' ceiling ↑",
    "transfer/all/of_ceiling_kept_min",
    PCT,
  ),
  ("Intensity: corr(target's true, read from the transfer) ↑", "intensity/corr", F3),
  (
    "Expression read as the target's, target gives z_expression ↑",
    "source_of/expression/z_expression",
    PCT,
  ),
  ("  … z_expression and z_0 ↑", "source_of/expression/z_expression+z_rest", PCT),
  ("  … z_0 only ↓", "source_of/expression/z_rest", PCT),
  ("Linear probe of expression from z_expression ↑", "linear_probe/expression/z_expression", PCT),
  ("  … from z_0 ↓", "linear_probe/expression/z_rest", PCT),
  ("Reconstructions: expression read as the image's ↑", "recon/read/expression", PCT),
  ("Expression synthesis accuracy, mean code (Table IV) ↑", "synthesis/acc_mean", PCT),
  (
    "Hopkins, expression codes per expression (Table III) ↑ = clustered",
    "hopkins/expression/mean",
    F3,
  ),
  (
    "Entropy of C_m on the other codes ÷ log(classes) (Fig. 5) ↑ = disentangled",
    "entropy/off_diagonal_normalized",
    F3,
  ),
  (
    "5-NN accuracy of illumination from the expression code ↓ = disentangled",
    "knn_acc/illumination/z_expression",
    PCT,
  ),
  ("5-NN accuracy of expression from z_0 ↓ = disentangled", "knn_acc/expression/z_rest", PCT),
]
TRIVIAL = [
  ("Return the source: L1", "gt/all/l1_source", F4),
  ("Return the target: L1", "gt/all/l1_target", F4),
  ("True renderings: transferred read correctly", "transfer/all/truth_acc_transferred", PCT),
  ("True renderings: kept read correctly", "transfer/all/truth_acc_kept", PCT),
  ("True renderings: intensity corr", "intensity/corr_truth", F3),
  ("Evaluation network: expression accuracy (test)", "eval_classifier/expression/acc", PCT),
]


def cell(runs: list[dict], key: str, fmt: str) -> str:
  values = [m[key] for m in runs if key in m]
  if not values:
    return "—"
  if len(values) == 1:
    return fmt.format(values[0])
  return f"{fmt.format(float(np.mean(values)))} ± {fmt.format(float(np.std(values, ddof=1)))}"


def table(columns: list[tuple[str, list[dict]]], rows=None) -> str:
  """Markdown: one column per (name, [metrics of each run]); rows without any value are left
  out."""
  head = "| metric | " + " | ".join(name for name, _ in columns) + " |"
  lines = [head, "|---|" + "---|" * len(columns)]
  for label, key, fmt in rows or ROWS:
    cells = [cell(runs, key, fmt) for _, runs in columns]
    if any(c != "—" for c in cells):
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
  for label, key, fmt in TRIVIAL:
    cells = [baseline_cell(runs, key, fmt) for _, runs in columns]
    if any(c != "—" for c in cells):
      lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def baseline_cell(runs: list[dict], key: str, fmt: str) -> str:
  """A baseline of a column's runs: one value where they share it (the same test set and
  evaluation networks), else their mean ± std (a column of runs at another image size, say)."""
  values = {m[key] for m in runs if key in m}
  return fmt.format(values.pop()) if len(values) == 1 else cell(runs, key, fmt)


def main(argv):
  """absl's main: ``argv[1:]`` are the NAME=JSON[,JSON...] columns."""
  if len(argv) < 2 or any("=" not in a for a in argv[1:]):
    raise errors.CommandLineError("give NAME=JSON[,JSON...] columns (see --help)")
  columns = []
  for arg in argv[1:]:
    name, paths = arg.rsplit("=", 1)  # a name may hold "=" ("λ_dis = 1=a.json")
    runs = []
    for path in paths.split(","):
      try:
        with open(path) as f:
          runs.append(json.load(f)["metrics"])
      except (OSError, ValueError, KeyError) as e:
        raise errors.InputError(
          f"{path}: not an evaluator JSON ({type(e).__name__}: {e})"
        ) from None
    columns.append((name, runs))
  print(table(columns))


if __name__ == "__main__":
  cli.run(main, FLAGS, positional=True)

r"""The README's results table: evaluator JSONs side by side, as Markdown.

    python benchmarks/eval_table.py NAME=W/eval/STEP.json [NAME=...]

Each argument is a column: a name and the JSON that ``python -m attrdis.evaluate`` wrote.
Rows are the headline metrics of every family (ground truth, transfer accuracy, intensity,
Table IV synthesis, Table III Hopkins, Fig. 5 entropy, reconstruction, the evaluation networks'
own accuracy); the trivial answers' ground-truth errors come from the first column's JSON (they
do not depend on the model).
"""

from __future__ import annotations

import json
import sys

ROWS = [
    ("Ground truth, all attribute sets: L1 of the transfer ↓", "gt/all/l1", "{:.4f}"),
    ("  … PSNR (dB) ↑", "gt/all/psnr", "{:.2f}"),
    ("Ground truth, expression only: L1 ↓", "gt/expression/l1", "{:.4f}"),
    ("Ground truth, illumination only: L1 ↓", "gt/illumination/l1", "{:.4f}"),
    ("Ground truth, identity only: L1 ↓", "gt/identity/l1", "{:.4f}"),
    ("Transferred attributes read as the target's ↑", "transfer/all/acc_transferred", "{:.1%}"),
    ("Kept attributes read as the source's ↑", "transfer/all/acc_kept", "{:.1%}"),
    ("  expression transferred ↑", "transfer/expression/acc_transferred", "{:.1%}"),
    ("  illumination transferred ↑", "transfer/illumination/acc_transferred", "{:.1%}"),
    ("  identity transferred ↑", "transfer/identity/acc_transferred", "{:.1%}"),
    ("Intensity preservation: corr(target's true, read from transfer) ↑", "intensity/corr",
     "{:.3f}"),
    ("Expression synthesis accuracy, mean-code (Table IV) ↑", "synthesis/acc_mean", "{:.1%}"),
    ("  … std over expressions", "synthesis/acc_std", "{:.1%}"),
    ("Hopkins, expression codes per expression (Table III) ↑ = clustered", "hopkins/expression/mean",
     "{:.3f}"),
    ("Entropy of C_m on the other codes ÷ log(classes) (Fig. 5) ↑ = disentangled",
     "entropy/off_diagonal_normalized", "{:.3f}"),
    ("5-NN accuracy of illumination from the expression code ↓ = disentangled",
     "knn_acc/illumination/z_expression", "{:.1%}"),
    ("Reconstruction PSNR (dB) ↑", "recon/psnr", "{:.2f}"),
]
TRIVIAL = [("Return the source: L1", "gt/all/l1_source", "{:.4f}"),
           ("Return the target: L1", "gt/all/l1_target", "{:.4f}"),
           ("True renderings: transferred read correctly", "transfer/all/truth_acc_transferred",
            "{:.1%}"),
           ("True renderings: kept read correctly", "transfer/all/truth_acc_kept", "{:.1%}"),
           ("True renderings: intensity corr", "intensity/corr_truth", "{:.3f}"),
           ("Evaluation network: expression accuracy (test)", "eval_classifier/expression/acc",
            "{:.1%}")]


def table(columns: list[tuple[str, dict]]) -> str:
  head = "| metric | " + " | ".join(name for name, _ in columns) + " |"
  lines = [head, "|---|" + "---|" * len(columns)]
  for label, key, fmt in ROWS:
    cells = [fmt.format(m[key]) if key in m else "—" for _, m in columns]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  first = columns[0][1]
  for label, key, fmt in TRIVIAL:
    if key in first:
      lines.append(f"| *{label}* | " + " | ".join([fmt.format(first[key])] * len(columns)) +
                   " |")
  return "\n".join(lines)


def main(argv):
  if len(argv) < 2 or any("=" not in a for a in argv[1:]):
    print(__doc__.strip(), file=sys.stderr)
    return 2
  columns = []
  for arg in argv[1:]:
    name, path = arg.rsplit("=", 1)
    with open(path) as f:
      columns.append((name, json.load(f)["metrics"]))
  print(table(columns))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))

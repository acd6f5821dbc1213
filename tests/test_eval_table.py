"""benchmarks/eval_table.py: columns of one run, and of several seeds as mean ± std."""

import importlib.util
import json
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "eval_table.py")
_spec = importlib.util.spec_from_file_location("eval_table", _PATH)
eval_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_table)


def test_single_runs_and_seed_columns(tmp_path, capsys):
  runs = [{"recon/psnr": p, "gt/all/skill": k, "gt/all/l1_source": 0.08}
          for p, k in ((30.0, 0.5), (31.0, 0.6), (35.0, 0.7))]
  paths = []
  for i, m in enumerate(runs):
    paths.append(str(tmp_path / f"{i}.json"))
    with open(paths[-1], "w") as f:
      json.dump({"metrics": m}, f)
  assert eval_table.main(["x", f"one={paths[0]}", f"seeds={','.join(paths)}"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == "| metric | one | seeds |"
  psnr = next(l for l in out if l.startswith("| Reconstruction PSNR"))
  mean, std = np.mean([30.0, 31.0, 35.0]), np.std([30.0, 31.0, 35.0])
  assert psnr.split(" | ")[1:] == ["30.00", f"{mean:.2f} ± {std:.2f} |"]
  assert any(l.startswith("| *Return the source: L1* | 0.0800 | 0.0800 |") for l in out)
  # Metrics no run has are left out.
  assert not any("Hopkins" in l for l in out)

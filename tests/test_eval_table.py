"""benchmarks/eval_table.py: columns of one run, and of several seeds as mean ± std."""

import importlib.util
import json
import os


from attrdis import cli

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "eval_table.py")
_spec = importlib.util.spec_from_file_location("eval_table", _PATH)
eval_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_table)


def test_single_runs_and_seed_columns(tmp_path, capsys):
  runs = [
    {"recon/psnr": p, "gt/all/skill": k, "gt/all/l1_source": 0.08}
    for p, k in ((30.0, 0.5), (31.0, 0.6), (35.0, 0.7))
  ]
  paths = []
  for i, m in enumerate(runs):
    paths.append(str(tmp_path / f"{i}.json"))
    with open(paths[-1], "w") as f:
      json.dump({"metrics": m}, f)
  assert table_command(f"λ = 1={paths[0]}", f"seeds={','.join(paths)}") == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == "| metric | λ = 1 | seeds |"
  psnr = next(l for l in out if l.startswith("| Reconstruction PSNR"))
  # By hand: mean 32; deviations -2, -1, 3; sample std sqrt((4 + 1 + 9) / 2) = 2.6458.
  assert psnr.split(" | ")[1:] == ["30.00", "32.00 ± 2.65 |"]
  assert any(l.startswith("| *Return the source: L1* | 0.0800 | 0.0800 |") for l in out)
  # Baselines are each column's own (runs evaluated on other images or by other networks).
  other = tmp_path / "other.json"
  other.write_text(json.dumps({"metrics": {"recon/psnr": 29.0, "gt/all/l1_source": 0.09}}))
  assert table_command(f"a={paths[0]}", f"b={other}") == 0
  out = capsys.readouterr().out.splitlines()
  assert "| *Return the source: L1* | 0.0800 | 0.0900 |" in out
  # Metrics no run has are left out.
  assert not any("Hopkins" in l for l in out)
  assert table_command(f"a={tmp_path / 'missing.json'}") == 1
  assert "missing.json: not an evaluator JSON" in capsys.readouterr().err


def table_command(*argv):
  return cli.call(eval_table.main, eval_table.FLAGS, argv, positional=True)


_CPATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "curves.py")
_cspec = importlib.util.spec_from_file_location("curves", _CPATH)
curves = importlib.util.module_from_spec(_cspec)
_cspec.loader.exec_module(curves)


def curves_command(*argv):
  return cli.call(curves.main, curves.FLAGS, argv, positional=True)


def test_curves_table_from_metrics_jsonl(tmp_path, capsys):
  rows = {
    "a": [
      {"step": 50, "rec": 1.0},
      {"step": 100, "eval/recon/psnr": 20.5},
      {"step": 200, "eval/recon/psnr": 22.25},
      {"step": 200, "eval/recon/psnr": 23.0},
    ],
    "b": [{"step": 100, "eval/recon/psnr": 25.0}, {"step": 150, "eval/recon/psnr": 26.0}],
  }
  for name, rs in rows.items():
    (tmp_path / name).mkdir()
    with open(tmp_path / name / "metrics.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rs)
  args = ["eval/recon/psnr", f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}"]
  assert curves_command(*args) == 0
  out = capsys.readouterr().out.splitlines()
  # Steps without the metric (50) are left out; the last row of a step wins (200: 23.0).
  assert out == [
    "| step | A | B |",
    "|---|---|---|",
    "| 100 | 20.5 | 25 |",
    "| 150 |  | 26 |",
    "| 200 | 23 |  |",
  ]
  assert curves_command(*args, "--every=100") == 0
  assert [l.split(" |")[0] for l in capsys.readouterr().out.splitlines()[2:]] == ["| 100", "| 200"]
  assert curves_command("nope", f"A={tmp_path / 'a'}") == 1
  assert "no run logged 'nope'" in capsys.readouterr().err
  assert curves_command("x", f"A={tmp_path / 'missing'}") == 1
  assert "no metrics.jsonl" in capsys.readouterr().err
  assert curves_command("x") == 2  # no NAME=WORKDIR column
  assert capsys.readouterr().err.startswith("error: give METRIC NAME=WORKDIR")

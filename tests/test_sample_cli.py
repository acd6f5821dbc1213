"""python -m attrdis.sample, run in-process (cli.call) on the tiny trained workdir.

Each mode: the grid's size, its tiles against the library's images, and the JSON sidecar.
Bad input: a one-line ``error: ...`` on stderr and a non-zero status (one subprocess run
checks that no traceback escapes).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from attrdis import checkpoints
from attrdis import cli
from attrdis import image_io
from attrdis import images
from attrdis import input_pipeline
from attrdis import sample
from attrdis import sampling
from test_sampling import sampling_workdir  # noqa: F401  (the shared trained workdir)

# This module and test_sampling.py share the trained workdir: one xdist worker runs both.
pytestmark = pytest.mark.xdist_group("sampling_workdir")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, PAD, BATCH = 16, 2, 8


@pytest.fixture(scope="module")
def env(sampling_workdir):  # noqa: F811
  trained = checkpoints.load_trained(sampling_workdir)
  builder, info = input_pipeline.load(trained.config)
  return dict(
    workdir=sampling_workdir,
    trained=trained,
    builder=builder,
    info=info,
    sampler=sampling.Sampler.from_trained(trained, batch_size=BATCH),
    test=image_io.load_split(builder, "test[:5]", trained.config),
  )


def sample_command(*argv):
  """``python -m attrdis.sample ARGV`` in this process; its exit status."""
  return cli.call(sample.main, sample.FLAGS, argv)


def run_cli(capsys, env, *argv):
  rc = sample_command(f"--workdir={env['workdir']}", f"--batch_size={BATCH}", *argv)
  out, err = capsys.readouterr()
  return rc, out, err


def grid_size(rows, cols):
  return (cols * S + (cols + 1) * PAD, rows * S + (rows + 1) * PAD)


def tile(grid, r, c):
  y, x = PAD + r * (S + PAD), PAD + c * (S + PAD)
  return grid[y : y + S, x : x + S].astype(int)


def read(path):
  return np.asarray(Image.open(path).convert("RGB"))


def close(a, b):
  """Tiles equal up to one grey level (float rounding across batchings)."""
  return np.abs(np.asarray(a, int) - images.to_uint8(b).astype(int)).max() <= 1


def cells(meta):
  return {(c["row"], c["col"]): c for c in meta["cells"]}


def test_transfer(capsys, env, tmp_path):
  out = tmp_path / "transfer.png"
  rc, stdout, err = run_cli(
    capsys,
    env,
    "--mode=transfer",
    "--source=split:test[:2]",
    "--target=split:test[2:5]",
    "--attributes=expression,illumination",
    f"--out={out}",
    "--save_individual",
  )
  assert rc == 0, err
  grid = read(out)
  assert Image.open(out).size == grid_size(3, 4)
  assert "3x4 tiles" in stdout
  x, s = env["test"].images, env["sampler"]
  assert np.all(tile(grid, 0, 0) == 255)  # top-left blank
  np.testing.assert_array_equal(tile(grid, 0, 3), images.to_uint8(x[4]))  # targets on top
  np.testing.assert_array_equal(tile(grid, 2, 0), images.to_uint8(x[1]))  # sources on the left
  want = s.transfer(x[:2], x[2:5], [1, 2]).images
  for r in (1, 2):
    for c in (1, 2, 3):
      assert close(tile(grid, r, c), want[r - 1, c - 1]), (r, c)
  meta = json.loads((tmp_path / "transfer.json").read_text())
  assert (meta["mode"], meta["rows"], meta["cols"], meta["step"]) == ("transfer", 3, 4, 2)
  assert meta["attributes"] == ["expression", "illumination"]
  by = cells(meta)
  assert len(by) == 11 and (0, 0) not in by
  codes = by[2, 3]["codes"]
  assert codes["identity"] == [{"role": "source", "input": "test[1]", "weight": 1.0}]
  assert codes["expression"] == [{"role": "target", "input": "test[4]", "weight": 1.0}]
  assert codes["rest"][0]["input"] == "test[1]"
  np.testing.assert_array_equal(read(tmp_path / by[2, 3]["file"]), tile(grid, 2, 3))
  assert len(os.listdir(tmp_path / "transfer_images")) == 11


def test_transfer_of_nothing_from_user_files_is_reconstruction(capsys, env, tmp_path):
  x = env["test"].images
  folder = tmp_path / "mine"
  folder.mkdir()
  for i in range(2):
    Image.fromarray(images.to_uint8(x[i])).save(folder / f"face{i}.png")
  Image.fromarray(images.to_uint8(x[3])).save(tmp_path / "target.png")
  out = tmp_path / "nothing.png"
  rc, _, err = run_cli(
    capsys,
    env,
    "--mode=transfer",
    f"--source={folder}",
    f"--target={tmp_path / 'target.png'}",
    "--attributes=",
    f"--out={out}",
  )
  assert rc == 0, err
  assert Image.open(out).size == grid_size(3, 2)
  rec = env["sampler"].reconstruct(x[:2])
  grid = read(out)
  assert close(tile(grid, 1, 1), rec[0]) and close(tile(grid, 2, 1), rec[1])
  assert cells(json.loads((tmp_path / "nothing.json").read_text()))[1, 0]["input"] == str(
    folder / "face0.png"
  )


def test_interpolate_onto(capsys, env, tmp_path):
  out = tmp_path / "interp.png"
  rc, _, err = run_cli(
    capsys,
    env,
    "--mode=interpolate",
    "--source=split:test[:2]",
    "--target=split:test[2:4]",
    "--attributes=expression",
    "--steps=4",
    "--onto=split:test[4]",
    f"--out={out}",
  )
  assert rc == 0, err
  assert Image.open(out).size == grid_size(2, 4)
  x, s = env["test"].images, env["sampler"]
  grid = read(out)
  start = s.transfer(x[4:5], x[:2], [1]).images[0]
  end = s.transfer(x[4:5], x[2:4], [1]).images[0]
  for q in range(2):
    assert close(tile(grid, q, 0), start[q]) and close(tile(grid, q, 3), end[q])
  meta = json.loads((tmp_path / "interp.json").read_text())
  np.testing.assert_allclose(meta["alphas"], [0, 1 / 3, 2 / 3, 1])
  codes = cells(meta)[1, 1]["codes"]
  assert [(t["input"], t["weight"]) for t in codes["expression"]] == [
    ("test[1]", pytest.approx(2 / 3)),
    ("test[3]", pytest.approx(1 / 3)),
  ]
  assert codes["identity"] == [{"role": "onto", "input": "test[4]", "weight": 1.0}]


def test_mix_given_and_random_weights(capsys, env, tmp_path):
  out = tmp_path / "mix.png"
  rc, _, err = run_cli(
    capsys,
    env,
    "--mode=mix",
    "--source=split:test[:3]",
    "--attributes=identity",
    "--weights=1,0,0;0.2,0.3,0.5",
    f"--out={out}",
  )
  assert rc == 0, err
  assert Image.open(out).size == grid_size(2, 3)  # the sources, then the 2 mixtures
  x, grid = env["test"].images, read(out)
  assert close(tile(grid, 1, 0), env["sampler"].reconstruct(x[:1])[0])
  assert close(tile(grid, 1, 1), env["sampler"].mix(x[:3], 0, [[0.2, 0.3, 0.5]]).images[0])
  np.testing.assert_array_equal(tile(grid, 0, 2), images.to_uint8(x[2]))
  meta = json.loads((tmp_path / "mix.json").read_text())
  assert meta["weights"] == [[1, 0, 0], [0.2, 0.3, 0.5]]

  rc, _, err = run_cli(
    capsys,
    env,
    "--mode=mix",
    "--source=split:test[:3]",
    "--attributes=identity",
    "--num=5",
    "--seed=3",
    f"--out={tmp_path / 'rmix.png'}",
  )
  assert rc == 0, err
  assert Image.open(tmp_path / "rmix.png").size == grid_size(2, 5)
  meta = json.loads((tmp_path / "rmix.json").read_text())
  np.testing.assert_allclose(meta["weights"], sampling.random_convex_weights(3, 5, 3), rtol=1e-6)
  assert meta["seed"] == 3 and len(meta["cells"]) == 3 + 5


def test_label(capsys, env, tmp_path):
  names = env["info"].class_names[1]  # expression
  out = tmp_path / "label.png"
  rc, _, err = run_cli(
    capsys,
    env,
    "--mode=label",
    "--source=split:test[:2]",
    "--attributes=expression",
    f"--classes={names[3]},{names[0]}",
    f"--out={out}",
  )
  assert rc == 0, err
  assert Image.open(out).size == grid_size(2, 3)
  cache = os.path.join(env["workdir"], "mean_codes", "step_2.npz")
  with np.load(cache) as f:
    means = f["expression"]
  x = env["test"].images
  want = env["sampler"].to_classes(x[:2], 1, means, [3, 0]).images
  grid = read(out)
  assert close(tile(grid, 1, 1), want[1, 0]) and close(tile(grid, 0, 2), want[0, 1])
  meta = json.loads((tmp_path / "label.json").read_text())
  assert meta["classes"] == [names[3], names[0]]
  assert cells(meta)[1, 1]["codes"]["expression"] == [
    {"class": names[3], "mean_over": "train", "weight": 1.0}
  ]

  rc, _, err = run_cli(
    capsys,
    env,
    "--mode=label",
    "--source=split:test[:2]",
    "--attributes=expression",
    f"--out={tmp_path / 'all.png'}",
  )
  assert rc == 0, err
  assert Image.open(tmp_path / "all.png").size == grid_size(2, 1 + len(names))


def test_random(capsys, env, tmp_path):
  out = tmp_path / "random.png"
  rc, _, err = run_cli(capsys, env, "--mode=random", "--num=3", "--seed=1", f"--out={out}")
  assert rc == 0, err
  assert Image.open(out).size == grid_size(3, 5)  # identity, expression, illumination, rest, new
  meta = json.loads((tmp_path / "random.json").read_text())
  by, grid = cells(meta), read(out)
  config = env["trained"].config
  for r in range(3):
    donors = [by[r, m]["input"] for m in range(4)]
    assert len(set(donors)) == 4 and all(d.startswith("train[") for d in donors)
    assert [by[r, 4]["codes"][k][0]["input"] for k in meta["code_slots"]] == donors
    pool = image_io.load_source([f"split:{d}" for d in donors], config, lambda: env["builder"])
    for m in range(4):
      np.testing.assert_array_equal(tile(grid, r, m), images.to_uint8(pool.images[m]))
    want = env["sampler"].recombine(pool.images, [[0, 1, 2, 3]]).images[0]
    assert close(tile(grid, r, 4), want)


def expect_error(capsys, env, match, *argv, workdir=None, status=1):
  """A one-line error (1: bad input, 2: bad command line), no traceback."""
  args = list(argv)
  if workdir is not None:
    rc = sample_command(f"--workdir={workdir}", *args)
    out, err = capsys.readouterr()
  else:
    rc, out, err = run_cli(capsys, env, *args)
  lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
  assert rc == status, err
  assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
  assert match in lines[0], lines[0]
  assert "Traceback" not in err


def test_bad_input(capsys, env, tmp_path):
  out = f"--out={tmp_path / 'x.png'}"
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not a jpeg at all")
  three = "--source=split:test[:3]"
  expect_error(
    capsys, env, "No checkpoint in", "--mode=random", out, workdir=str(tmp_path / "nothing_here")
  )
  expect_error(capsys, env, "No checkpoint for step 7", "--mode=random", "--step=7", out)
  expect_error(
    capsys,
    env,
    "attribute 'gaze' is not one of this model's: identity, expression, illumination, rest",
    "--mode=transfer",
    three,
    "--target=split:test[:1]",
    "--attributes=expression,gaze",
    out,
  )
  expect_error(
    capsys,
    env,
    f"cannot read image {broken}",
    "--mode=transfer",
    f"--source=split:test[:1],{broken}",
    "--target=split:test[:1]",
    "--attributes=expression",
    out,
  )
  expect_error(
    capsys,
    env,
    "weights must sum to 1",
    "--mode=mix",
    three,
    "--attributes=identity",
    "--weights=0.5,0.2,0.2",
    out,
  )
  expect_error(
    capsys,
    env,
    "weights must not be negative",
    "--mode=mix",
    three,
    "--attributes=identity",
    "--weights=1.5,-0.5,0",
    out,
  )
  expect_error(
    capsys,
    env,
    "2 weights given for 3 images",
    "--mode=mix",
    three,
    "--attributes=identity",
    "--weights=0.5,0.5",
    out,
  )
  expect_error(
    capsys,
    env,
    "no split 'validation'; it has test, train",
    "--mode=label",
    "--source=split:validation[:2]",
    "--attributes=expression",
    out,
  )
  expect_error(
    capsys,
    env,
    "--mode=transfer needs --target",
    "--mode=transfer",
    three,
    "--attributes=expression",
    out,
    status=2,
  )
  expect_error(
    capsys, env, "flag --mode=swap: value should be one of <transfer|", "--mode=swap", out, status=2
  )
  expect_error(capsys, env, "Unknown command line flag 'sauce'", "--sauce=x", out, status=2)
  expect_error(
    capsys,
    env,
    "expression has no class 'sleepy'",
    "--mode=label",
    three,
    "--attributes=expression",
    "--classes=sleepy",
    out,
  )
  assert not os.path.exists(tmp_path / "x.png")


def test_command_line_error_without_traceback(env, tmp_path):
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"\x89PNG\r\n\x1a\n but truncated")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "attrdis.sample",
      f"--workdir={env['workdir']}",
      "--mode=interpolate",
      f"--source={broken}",
      "--target=split:test[:1]",
      "--attributes=expression",
      f"--out={tmp_path / 'x.png'}",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot read image {broken}")
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "x.png")

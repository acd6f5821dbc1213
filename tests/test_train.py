"""End to end: run_train.py on tiny synthetic faces, exact resume, workdir contents, bad input."""

import glob
import io
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from attrdis import checkpoints
from attrdis import train
from attrdis.configuration import ConfigError
from tiny import config_flags, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stored_state(workdir, step):
  mngr = checkpoints.manager(workdir, create=False)
  return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def test_cli_run_leaves_everything_and_resume_is_bit_exact(synthetic_data_dir, tmp_path):
  config = tiny_config()
  config.dataset.data_dir = synthetic_data_dir
  config.dataset.attributes = ("identity", "expression", "illumination")

  # Uninterrupted, through the command line.
  w_cli = str(tmp_path / "cli")
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "run_train.py"),
      f"--config={os.path.join(ROOT, 'configs', 'synthetic.py')}",
      f"--workdir={w_cli}",
    ]
    + config_flags(config),
    capture_output=True,
    text=True,
    cwd=str(tmp_path),
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 4/4" in proc.stdout

  # Workdir contents: checkpoints (every 2 steps), metrics.jsonl, TensorBoard events, PNGs.
  assert sorted(
    int(os.path.basename(p)) for p in glob.glob(os.path.join(w_cli, "checkpoints", "[0-9]*"))
  ) == [2, 4]
  rows = [json.loads(l) for l in open(os.path.join(w_cli, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [2, 4]
  for key in (
    "loss_g",
    "loss_d",
    "loss_c",
    "rec",
    "cls_x",
    "dis",
    "cls_trn",
    "adv_g",
    "wasserstein",
    "gp",
    "learning_rate",
    "steps_per_sec",
  ):
    assert all(np.isfinite(r[key]) for r in rows), key
  grid = Image.open(os.path.join(w_cli, "samples", "step_0000004.png"))
  # rows: inputs, targets, reconstructions, one per attribute (3); 4 columns of 16 px + 2 px pads
  assert grid.size == (4 * 16 + 5 * 2, 6 * 16 + 7 * 2)
  # TensorBoard (read with its own loader): the same scalars, the same grids, the config.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top

  (events,) = glob.glob(os.path.join(w_cli, "events.out.tfevents.*"))
  ea = event_accumulator.EventAccumulator(events, size_guidance={"images": 0, "scalars": 0})
  ea.Reload()
  for key in ("loss_g", "rec", "acc_trn/expression", "steps_per_sec"):
    # float32 in the event file: within its rounding of the metrics.jsonl value.
    assert [(e.step, e.value) for e in ea.Scalars(key)] == [
      (r["step"], pytest.approx(r[key], rel=2**-23)) for r in rows
    ], key
  for event in ea.Images("samples"):
    png = os.path.join(w_cli, "samples", f"step_{event.step:07d}.png")
    shown = Image.open(io.BytesIO(event.encoded_image_string))
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(Image.open(png)))
  assert [e.step for e in ea.Images("samples")] == [2, 4]
  assert ea.PluginTagToContent("hparams")

  # Stopped after half the steps and resumed, in this process.
  w_resumed = str(tmp_path / "resumed")
  first = train.train_and_evaluate(config, w_resumed, stop_at_step=2)
  assert int(first.step) == 2
  final = train.train_and_evaluate(config, w_resumed)
  assert int(final.step) == 4

  a, b = stored_state(w_cli, 4), stored_state(w_resumed, 4)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(final.params), jax.tree.leaves(b["params"])):
    np.testing.assert_array_equal(x, y)
  # And training did move the params away from the step-2 ones.
  mid = (
    stored_state(w_resumed, 2)
    if os.path.exists(os.path.join(w_resumed, "checkpoints", "2"))
    else None
  )
  if mid is not None:
    assert any(
      not np.array_equal(x, y)
      for x, y in zip(jax.tree.leaves(mid["params"]), jax.tree.leaves(b["params"]))
    )

  # A different model in the same workdir is refused, naming the field; nothing is touched.
  before = sorted(os.listdir(os.path.join(w_resumed, "checkpoints")))
  other = tiny_config()
  other.dataset.data_dir = synthetic_data_dir
  other.dataset.attributes = config.dataset.attributes
  other.model.encoder_widths = (4, 8, 16)
  other.model.classifier_widths = (4, 16)
  with pytest.raises(checkpoints.CheckpointError, match=r"model\.encoder_widths"):
    train.train_and_evaluate(other, w_resumed)
  assert sorted(os.listdir(os.path.join(w_resumed, "checkpoints"))) == before


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("image_size", 20, "multiple of 8"),
    ("image_size", 8, "multiple of 8 from 16"),
    ("dataset.name", "celeba", "unknown dataset"),
    ("dataset.attributes", ("identity", "age"), "'age' is not labelled"),
    ("batch_size", 6, "does not divide over the 4 devices"),
    ("dataset.builder_config", "huge", "has the configs"),
    ("dtype", "float16", "float32, bfloat16"),
    (
      "image_size",
      24,
      "has 16 px images, smaller than the model's; use --config.image_size=16 or less.",
    ),
    ("image_size", 32, "--config.image_size=16 or less, or --config.dataset.builder_config=32px"),
  ],
)
def test_bad_config_is_refused_before_compiling(
  synthetic_data_dir, tmp_path, field, value, message
):
  config = tiny_config()
  config.dataset.data_dir = synthetic_data_dir
  parent, _, leaf = ("config." + field).rpartition(".")
  node = config
  for part in parent.split(".")[1:]:
    node = node[part]
  node[leaf] = value
  with pytest.raises(ConfigError, match=re.escape(message)):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(os.path.join(tmp_path, "w"))  # nothing written, not even the folder


# Every field with a value that cannot work: (field, value, what the one line says).
UNWORKABLE = [
  ("seed", -1, "must be from 0 to 2**31 - 1"),
  ("image_size", 20, "multiple of 8"),
  ("image_size", 512, "from 16 to 256"),
  ("batch_size", 1, "at least 2 images"),
  ("batch_size", 0, "at least 2 images"),
  ("num_train_steps", 0, "must be ≥ 1, or -1"),
  ("num_train_steps", -2, "must be ≥ 1, or -1"),
  ("num_epochs", 0, "must be ≥ 1"),
  ("num_epochs", -3, "must be ≥ 1"),
  ("dtype", "float16", "choose one of float32, bfloat16"),
  ("dtype", "int8", "choose one of float32, bfloat16"),
  ("log_every_steps", 0, "must be ≥ 1"),
  ("log_every_steps", -100, "must be ≥ 1"),
  ("checkpoint_every_steps", 0, "must be ≥ 1"),
  ("checkpoint_every_steps", -1, "must be ≥ 1"),
  ("sample_every_steps", 0, "must be ≥ 1"),
  ("keep_checkpoints", 0, "must be ≥ 1"),
  ("num_sample_images", 0, "must be ≥ 1"),
  ("eval_every_steps", -5, "must be ≥ 0 (0: never)"),
  ("debug_nan_at_step", -1, "must be ≥ 0"),
  ("dataset.attributes", ("identity", "expression", "identity"), "named twice"),
  ("dataset.attributes", (), "is empty"),
  ("dataset.num_workers", -2, "must be ≥ 0, or -1"),
  ("model.encoder_widths", (4, 0, 8), "widths must be integers ≥ 1"),
  ("model.encoder_widths", (4, 8), "needs 3 widths"),
  ("model.decoder_up_widths", (8, -4), "widths must be integers ≥ 1"),
  ("model.classifier_widths", (4, 4), "the last equal to the code's channels"),
  ("model.num_res_blocks", -1, "must be ≥ 0"),
  ("model.critic_base_width", 0, "must be ≥ 1"),
  ("model.critic_max_blocks", 0, "must be ≥ 1"),
  ("loss_weights.rec", -1.0, "finite number ≥ 0"),
  ("loss_weights.gp", float("inf"), "finite number ≥ 0"),
  ("optimizer.learning_rate", 0.0, "finite number > 0"),
  ("optimizer.learning_rate", float("nan"), "finite number > 0"),
  ("optimizer.b1", 1.0, "in [0, 1)"),
  ("optimizer.b2", -0.1, "in [0, 1)"),
  ("optimizer.decay_fraction", 1.5, "in [0, 1]"),
]


def test_every_unworkable_field_is_one_line_naming_it(synthetic_data_dir, tmp_path):
  """Each value is refused by the checks that run before anything is compiled or written,
  with one line that starts with the field and its value."""
  from attrdis import configuration  # pylint: disable=g-import-not-at-top
  from attrdis import errors  # pylint: disable=g-import-not-at-top

  good = tiny_config()
  good.dataset.data_dir = synthetic_data_dir
  configuration.validate(good)
  for field, value, message in UNWORKABLE:
    config = tiny_config()
    config.dataset.data_dir = synthetic_data_dir
    parent, _, leaf = field.rpartition(".")
    node = config
    for part in parent.split(".") if parent else []:
      node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError) as info:
      configuration.validate(config)
    text = errors.message(info.value)
    assert text == str(info.value) and "\n" not in text, (field, text)
    assert text.startswith(f"config.{field}="), (field, text)
    assert message in text, (field, value, text)
  # And through the trainer: refused before the workdir is even created.
  config = tiny_config()
  config.dataset.data_dir = synthetic_data_dir
  config.num_train_steps = -7
  with pytest.raises(ConfigError, match="num_train_steps=-7"):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_cli_errors_are_one_line(tmp_path):
  base = [
    sys.executable,
    os.path.join(ROOT, "run_train.py"),
    f"--config={os.path.join(ROOT, 'configs', 'synthetic.py')}",
    f"--workdir={tmp_path / 'w'}",
  ]
  proc = subprocess.run(
    base + ["--config.no_such_field=1"], capture_output=True, text=True, timeout=300
  )
  assert proc.returncode != 0
  assert "no_such_field" in proc.stderr
  proc = subprocess.run(
    base + ["--config.image_size=36"], capture_output=True, text=True, timeout=300
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: config.image_size=36")
  assert "Traceback" not in proc.stderr


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(ConfigError, match="not writable"):
    train.check_workdir(str(blocker / "w"))


def test_periodic_eval_is_logged(synthetic_data_dir, tmp_path, capsys):
  """config.eval_every_steps: the evaluator's cheap subset runs at every multiple and at the
  end; its numbers are the ones suite.periodic_eval gives on the saved checkpoint."""
  from attrdis.evaluation import suite  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  config.dataset.data_dir = synthetic_data_dir
  config.num_train_steps = 3
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 1
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(config, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = {r["step"]: r for r in rows if any(k.startswith("eval/") for k in r)}
  assert sorted(evals) == [2, 3]
  printed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("eval ")]
  assert [l.split(":")[0] for l in printed] == ["eval 2", "eval 3"]
  for step in (2, 3):
    trained = checkpoints.load_trained(workdir, step)
    expected = suite.periodic_eval(trained.config, workdir, trained.models, trained.params, step)
    got = {k[len("eval/") :]: v for k, v in evals[step].items() if k.startswith("eval/")}
    assert sorted(got) == sorted(expected)
    assert "recon/l1" in got and "gt/expression/l1" in got and "gt/expression/l1_source" in got
    for k, v in expected.items():
      assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k

"""The metric writers: TensorBoard reads back what was written, metrics.jsonl is readable while
a run goes on, and writing metrics does not import TensorFlow."""

import glob
import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from attrdis import metric_writers
from attrdis import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_metrics_rows_are_readable_while_the_run_goes_on(tmp_path):
  path = str(tmp_path / "m" / "metrics.jsonl")
  writer = metric_writers.JsonlWriter(path)
  writer.write_scalars(3, {"loss": np.float32(1.5), "acc": 0.25})
  assert metric_writers.read_jsonl(path) == [{"step": 3, "loss": 1.5, "acc": 0.25}]
  writer.write_scalars(4, {"loss": 2.0})
  assert [r["step"] for r in metric_writers.read_jsonl(path)] == [3, 4]
  writer.close()


def test_tensorboard_reads_scalars_images_and_hparams(tmp_path):
  """Read back with TensorBoard's own loader (its record reader checks every CRC)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  grid = rng.integers(0, 256, (1, 10, 14, 3), dtype=np.uint8)
  pair = rng.random((2, 6, 5, 1))  # floats in [0, 1], one channel
  w = metric_writers.create_writer(str(tmp_path))
  w.write_hparams({"lr": 2e-4, "model.widths": "(4, 8)", "bf16": True, "steps": 10, "x": None})
  w.write_scalars(2, {"loss": np.float32(0.75), "acc/expression": 0.5})
  w.write_scalars(4, {"loss": 0.5})
  w.write_images(4, {"samples": grid, "pair": pair})
  w.close()
  (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*.v2"))
  ea = event_accumulator.EventAccumulator(path, size_guidance={"images": 0, "scalars": 0})
  ea.Reload()
  assert [(e.step, e.value) for e in ea.Scalars("loss")] == [(2, 0.75), (4, 0.5)]
  assert [(e.step, e.value) for e in ea.Scalars("acc/expression")] == [(2, 0.5)]
  assert sorted(ea.Tags()["images"]) == ["pair/0", "pair/1", "samples"]

  def decoded(tag):
    (event,) = ea.Images(tag)
    assert event.step == 4
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))

  np.testing.assert_array_equal(decoded("samples"), grid[0])
  np.testing.assert_array_equal(decoded("pair/1"), np.round(pair[1, ..., 0] * 255).astype(np.uint8))
  # The HPARAMS tab's session start: every value, typed as given (None as its str).
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top

  content = ea.PluginTagToContent("hparams")
  (start,) = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()]
  h = start.session_start_info.hparams
  assert h["lr"].number_value == 2e-4 and h["steps"].number_value == 10
  assert h["model.widths"].string_value == "(4, 8)" and h["x"].string_value == "None"
  assert h["bf16"].bool_value is True
  assert metric_writers.read_jsonl(str(tmp_path / "metrics.jsonl")) == [
    {"step": 2, "loss": 0.75, "acc/expression": 0.5},
    {"step": 4, "loss": 0.5},
  ]


def test_bad_image_shapes_are_named(tmp_path):
  w = metric_writers.TensorBoardWriter(str(tmp_path))
  with pytest.raises(ValueError, match=r"images 'g': a batch \(N, H, W\[, C\]\), not \(5,\)"):
    w.write_images(0, {"g": np.zeros(5)})
  with pytest.raises(ValueError, match=r"not \(4, 4, 2\)"):
    w.write_images(0, {"g": np.zeros((1, 4, 4, 2))})
  w.close()


def test_processes_other_than_the_first_only_log(tmp_path):
  w = metric_writers.create_writer(str(tmp_path), process_index=1)
  w.write_scalars(1, {"loss": 1.0})
  w.close()
  assert os.listdir(tmp_path) == []


def test_writing_metrics_does_not_import_tensorflow(tmp_path):
  """TensorFlow's import costs seconds of every training start; the trainer and its writers
  need none of it."""
  code = (
    "import sys, numpy as np\n"
    "from attrdis import metric_writers, train\n"
    "w = metric_writers.create_writer(sys.argv[1])\n"
    "w.write_hparams({'a': 1}); w.write_scalars(1, {'l': 1.0})\n"
    "w.write_images(1, {'s': np.zeros((1, 4, 4, 3), np.uint8)}); w.close()\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT
  )
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
  "left, rate, text",
  [
    (0, 2.0, ""),
    (10, 0.0, ""),
    (10, float("nan"), ""),
    (60, 2.0, ", <1 min left"),
    (1200, 2.0, ", 10 min left"),
    (7500, 2.0, ", 1 h 02 min left"),
  ],
)
def test_eta(left, rate, text):
  assert train.eta(left, rate) == text

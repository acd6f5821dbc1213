"""python -m attrdis.benchmark: the train step's timing JSON, the input and eval parts."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrdis import benchmark
from tiny import tiny_config, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_part_reports_consistent_numbers():
  config = tiny_config(batch_size=8)
  result = benchmark.benchmark_train(
    config, (5, 3), jax.devices()[:2], steps=3, warmup=1, window=2, matmul_size=256
  )
  step = result["step_s"]
  assert step["n"] == 3 and 0 < step["min"] <= step["median"] <= step["max"]
  assert result["window"] == 2
  assert result["compile_s"] > 0 and result["first_step_s"] > 0
  assert result["images_per_s"] == pytest.approx(8 / step["median"])
  assert result["images_per_s_per_device"] == pytest.approx(result["images_per_s"] / 2)
  assert result["environment"]["num_devices"] == 2
  # FLOPs of the whole step (both devices' programs), and MFU = achieved / measured peak.
  # Model FLOPs (lowered step, direct convs: what MFU uses) and executed FLOPs (compiled
  # step): the same work here, where the tiny model's convs are all XLA's on both sides.
  assert result["flops_per_step"] > 1e6
  assert 0.7 < result["model_flops_per_step"] / result["flops_per_step"] < 1.4
  assert result["model_flops_per_step"] == benchmark.model_flops(config, (5, 3))
  assert result["achieved_flops_per_s"] == pytest.approx(
    result["model_flops_per_step"] / step["median"]
  )
  assert result["executed_flops_per_s"] == pytest.approx(result["flops_per_step"] / step["median"])
  assert result["peak_matmul"]["n"] == 256 and result["peak_matmul"]["dtype"] == "float32"
  assert result["mfu"] == pytest.approx(
    result["achieved_flops_per_s_per_device"] / result["peak_flops_per_s"]
  )
  assert result["metrics_finite"]
  assert result["step_process_cpu_s"]["n"] == 3
  json.dumps(result)  # JSON-able as it stands

  # The cost analysis counts the step's real work: half the images, about half the FLOPs.
  half = tiny_config(batch_size=4)
  r = benchmark.benchmark_train(
    half, (5, 3), jax.devices()[:2], steps=1, warmup=1, window=1, peak=False
  )
  assert 1.8 < result["flops_per_step"] / r["flops_per_step"] < 2.1
  assert 1.8 < result["model_flops_per_step"] / r["model_flops_per_step"] < 2.1


def test_num_classes_from_table_or_flag():
  config = tiny_config(attributes=("identity", "expression"))
  config.dataset.name = "multipie"
  assert benchmark.num_classes_of(config) == (337, 4)
  assert benchmark.num_classes_of(config, ["7", "2", "3"]) == (7, 2, 3)
  config.dataset.attributes = ("identity", "hat")
  with pytest.raises(benchmark.BenchmarkError, match="--num_classes"):
    benchmark.num_classes_of(config)


def test_input_part_measures_the_grain_loader(synthetic_data_dir, tmp_path):
  config = tiny_config(batch_size=4)
  config.dataset.data_dir = synthetic_data_dir
  train_json = tmp_path / "train.json"
  train_json.write_text(json.dumps({"images_per_s": 2.5}))
  result = benchmark.benchmark_input(config, batches=3, workers=0, train_json=str(train_json))
  # The ratio to the step: the lower of the loader's two rates over the step's images/s.
  assert result["ratio_to_train"] == pytest.approx(
    min(result["images_per_s"], result["images_per_s_to_device"]) / 2.5
  )
  assert result["dataset"] == "synthetic_faces" and result["builder_config"] == "tiny"
  assert result["image_shape"] == [4, 16, 16, 3]
  assert result["images_per_s"] > 0 and result["images_per_s_to_device"] > 0
  assert result["workers"] == 0 and result["images_per_s_per_worker"] == result["images_per_s"]


def test_input_part_names_a_missing_dataset(tmp_path):
  config = tiny_config()
  config.dataset.name = "multipie"
  config.dataset.builder_config = ""
  config.dataset.attributes = ("identity", "expression", "illumination")
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(benchmark.BenchmarkError, match="configs/synthetic.py"):
    benchmark.benchmark_input(config, batches=1, workers=0)


def test_summarize():
  s = benchmark.summarize([3.0, 1.0, 2.0, 10.0])
  assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 10.0 and s["n"] == 4


def test_cli_prints_json(tmp_path):
  # Every compilation is cached (threshold 0), in a folder of this test's own.
  env = dict(
    os.environ,
    XLA_FLAGS=xla_flags(2),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  cache = str(tmp_path / "cache")
  cmd = [
    sys.executable,
    "-m",
    "attrdis.benchmark",
    "--config=configs/synthetic.py",
    "--config.image_size=16",
    "--config.batch_size=4",
    "--config.model.num_res_blocks=1",
    "--config.model.encoder_widths=(4, 8, 8)",
    "--config.model.classifier_widths=(4, 8)",
    "--config.model.decoder_up_widths=(8, 4)",
    "--config.model.critic_base_width=4",
    "--steps=2",
    "--matmul_size=128",
    "--num_classes=5,3,4",
  ]
  out = subprocess.run(
    cmd + [f"--compilation_cache={cache}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout)
  assert result["part"] == "train" and result["config"] == "configs/synthetic.py"
  assert result["num_classes"] == [5, 3, 4] and result["image_size"] == 16
  assert result["environment"]["num_devices"] == 2 and result["mfu"] > 0
  # A new cache folder: the first compile is cold, the second (after jax.clear_caches())
  # reads the step the first one wrote there.
  assert result["compilation_cache"] == cache and os.listdir(cache)
  assert result["compile_from_cache"] is False and result["warm_compile_from_cache"] is True
  assert result["compile_s"] > 0 and result["warm_compile_s"] > 0 and result["warm_trace_s"] > 0

  bad = subprocess.run(
    cmd[:4] + ["--config.dtype=float16"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert bad.returncode == 1 and "config.dtype" in json.loads(bad.stdout)["error"]


def test_prefetch_to_device_keeps_order_and_shards():
  from attrdis import train_step as step_lib
  import numpy as np

  mesh = step_lib.make_mesh(jax.devices()[:2])
  _, data = step_lib.shardings(mesh)
  host = [{"image": np.full((4, 2), i, np.float32)} for i in range(5)]
  got = list(step_lib.prefetch_to_device(iter(host), data, size=2))
  assert len(got) == 5
  for i, b in enumerate(got):
    assert b["image"].sharding == data
    np.testing.assert_array_equal(np.asarray(b["image"]), host[i]["image"])


def test_eval_part_times_each_stage_and_their_sequence():
  config = tiny_config(batch_size=2)
  result = benchmark.benchmark_eval(config, (5, 3), jax.devices()[:1], steps=2, window=1)
  assert result["part"] == "eval" and result["batch_size"] == 2
  rates = []
  for name in ("translate", "inception", "classifiers"):
    part = result[name]
    assert part["compile_s"] > 0 and part["batch_s"]["n"] == 2
    assert part["images_per_s"] == pytest.approx(2 / part["batch_s"]["median"])
    rates.append(part["images_per_s"])
  # Inception-V3 at 299 px costs ~5.7 GFLOP per image (the FID network), far above the rest.
  assert result["inception"]["flops_per_batch"] > 2 * 5e9
  assert result["images_per_s"] == pytest.approx(1 / sum(1 / r for r in rates))
  json.dumps(result)


def test_training_batches_are_uint8_pixels_scaled_on_the_device(synthetic_data_dir):
  """The training loader hands over the stored uint8 pixels; the step's scaling gives, bit for
  bit, the float32 images the evaluation loader makes on the host."""
  from attrdis import input_pipeline
  from attrdis import train_step as step_lib

  config = tiny_config(batch_size=4)
  config.dataset.data_dir = synthetic_data_dir
  builder, _ = input_pipeline.load(config)
  train = next(
    iter(input_pipeline.create_loader(config, builder, "train", train=True, worker_count=0))
  )
  assert train["image"].dtype == np.uint8 and train["image"].shape == (4, 16, 16, 3)
  source = builder.as_data_source("train")
  keys = input_pipeline.GlobalBatchRows(source, 4, (0, 4), config.seed).record_keys(0)
  host = np.stack([input_pipeline.to_model_image(source[int(k)]["image"], 16) for k in keys])
  np.testing.assert_array_equal(train["image"], np.rint((host + 1) * 127.5).astype(np.uint8))
  scaled = np.asarray(jax.jit(step_lib.model_images)(train["image"]))
  assert scaled.dtype == np.float32
  np.testing.assert_array_equal(scaled, host)
  # Every pixel value, not only those in the batch.
  every = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(step_lib.model_images)(every)), every.astype(np.float32) / 127.5 - 1.0
  )
  # Float images (already scaled) pass through; the NaN test config keeps float batches.
  np.testing.assert_array_equal(np.asarray(step_lib.model_images(jnp.asarray(host))), host)
  config.debug_nan_at_step = 2
  assert input_pipeline.train_image_dtype(config) == np.float32

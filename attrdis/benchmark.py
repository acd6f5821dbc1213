r"""Throughput of the train step, the input pipeline and the evaluator, as JSON.

    python -m attrdis.benchmark --config=configs/multipie.py [--steps N] [--config.dtype=bfloat16] \
        [--config.image_size=64] [--num_classes=337,4,20] [--part=train|input|eval]

``--part=train`` (default) builds the model and a synthetic batch on the devices (no dataset
needed), compiles the jitted train step (``train_step.jit_train_step``, the one training uses),
times ``--steps`` timed samples of ``--window`` back-to-back steps each after ``--warmup`` steps,
and prints one JSON object: compile seconds (cold, or read from the persistent compilation
cache when ``compile_from_cache``; then ``warm_*``: traced and compiled again after
``jax.clear_caches()``, as a resumed run would; ``--compilation_cache=$(mktemp -d)`` makes the
first compile cold), the median and spread of the step time, images/s
(global and per device), FLOPs per step from XLA's cost analysis of the compiled step, achieved
FLOP/s, the device's peak measured here with a large matmul in the step's compute dtype, their
ratio (MFU), and memory (the compiled program's sizes; peak device memory where the backend
reports it).

``--part=input`` measures the grain loader alone (images/s in total and per worker process,
delivered from the TFDS data source of ``config.dataset``, which must be prepared or preparable
here: e.g. configs/synthetic.py; with ``--train_json``, the ratio to that step's images/s);
``--part=eval`` the evaluator's compute (translation through the generator, Inception pool3
features and the attribute classifiers, random weights: speed does not depend on them).

The number of classes per attribute comes from ``--num_classes`` or, for the known datasets,
from a table (the databases' label counts); M = the number of classes given.

``--help`` lists the flags. An error a user can cause (a config or dataset that cannot be used)
is printed as ``{"part": ..., "error": ...}`` on stdout (and ``--output``) and as one ``error:``
line on stderr, with status 1 (2 for a bad command line).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from attrdis import cli
from attrdis import compilation_cache
from attrdis import configuration
from attrdis import errors
from attrdis import train_state as ts
from attrdis import train_step as step_lib

FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (configs/*.py).", flag_values=FLAGS, lock_config=True
)
_PART = flags.DEFINE_enum(
  "part", "train", ["train", "input", "eval"], "What to measure.", flag_values=FLAGS
)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed samples.", flag_values=FLAGS)
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.", flag_values=FLAGS)
_WINDOW = flags.DEFINE_integer(
  "window",
  0,
  "Steps dispatched back to back per timed sample (0: 1 on CPU, 10 elsewhere).",
  flag_values=FLAGS,
)
_NUM_CLASSES = flags.DEFINE_list(
  "num_classes",
  None,
  "Classes per attribute (defaults: the dataset's known label counts).",
  flag_values=FLAGS,
)
_DEVICES = flags.DEFINE_integer("devices", 0, "Devices to use (0: all).", flag_values=FLAGS)
_COMPILATION_CACHE = flags.DEFINE_string(
  "compilation_cache", None, compilation_cache.FLAG_HELP, flag_values=FLAGS
)
_PEAK = flags.DEFINE_bool(
  "peak", True, "Measure the peak FLOP/s with a matmul (for MFU).", flag_values=FLAGS
)
_MATMUL_SIZE = flags.DEFINE_integer(
  "matmul_size", 0, "Side of the peak matmul (0: 2048 on CPU, 8192 elsewhere).", flag_values=FLAGS
)
_OUTPUT = flags.DEFINE_string("output", "", "Also write the JSON to this file.", flag_values=FLAGS)
_PROFILE_DIR = flags.DEFINE_string(
  "profile_dir", "", "Write a jax.profiler trace of the timed steps here.", flag_values=FLAGS
)
_BATCHES = flags.DEFINE_integer("batches", 50, "--part=input: batches timed.", flag_values=FLAGS)
_WORKERS = flags.DEFINE_integer(
  "workers", -1, "--part=input: grain workers (-1: config.dataset.num_workers).", flag_values=FLAGS
)
_TRAIN_JSON = flags.DEFINE_string(
  "train_json",
  "",
  "--part=input: a --part=train JSON to compare the delivery rate with.",
  flag_values=FLAGS,
)
_EVAL_BATCH = flags.DEFINE_integer(
  "eval_batch", 0, "--part=eval: batch (0: config.batch_size).", flag_values=FLAGS
)
flags.mark_flags_as_required(["config"], flag_values=FLAGS)

# The databases' label counts (MultiPIE: 337 subjects, the paper's 4 expressions, 20 flashes).
KNOWN_NUM_CLASSES = {
  "multipie": {"identity": 337, "expression": 4, "illumination": 20},
  "bu3dfe": {"identity": 100, "expression": 7, "sex": 2},
  "rafd": {"identity": 67, "expression": 8, "gaze": 3},
  "synthetic_faces": {"identity": 100, "expression": 5, "illumination": 5, "gaze": 3, "color": 4},
}

# Vendor dense peaks (FLOP/s) for context only; MFU uses the peak measured here.
SPEC_PEAKS = {
  ("H100", "bfloat16"): 989e12,
  ("H100", "float32"): 494e12,  # SXM; float32 as TF32
  ("H200", "bfloat16"): 989e12,
  ("H200", "float32"): 494e12,
}


class BenchmarkError(errors.UserError, RuntimeError):
  """A config, dataset or device set the benchmark cannot run with; the message says why."""


def num_classes_of(config, override: Sequence[str] | None = None) -> tuple[int, ...]:
  if override:
    return tuple(int(n) for n in override)
  table = KNOWN_NUM_CLASSES.get(config.dataset.name, {})
  try:
    return tuple(table[a] for a in config.dataset.attributes)
  except KeyError as e:
    raise BenchmarkError(
      f"no known class count for attribute {e} of dataset "
      f"{config.dataset.name!r}: give --num_classes=N1,N2,..."
    ) from None


def load_average():
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


def environment(devices) -> dict:
  d = devices[0]
  try:
    import flax  # pylint: disable=g-import-not-at-top

    flax_version = flax.__version__
  except ImportError:
    flax_version = None
  return {
    "platform": d.platform,
    "device_kind": d.device_kind,
    "num_devices": len(devices),
    "host": platform.node(),
    "host_cpus": os.cpu_count(),
    "load_average": load_average(),
    "jax": jax.__version__,
    "flax": flax_version,
    "python": platform.python_version(),
    "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
  }


def summarize(times: Sequence[float]) -> dict:
  t = sorted(times)
  q = lambda p: float(np.percentile(t, p))
  med = statistics.median(t)
  return {
    "median": med,
    "min": t[0],
    "max": t[-1],
    "mean": statistics.fmean(t),
    "std": statistics.pstdev(t),
    "p10": q(10),
    "p90": q(90),
    "n": len(t),
    "rel_spread": (q(90) - q(10)) / med if med > 0 else None,
  }


def cost_flops(program) -> float | None:
  """FLOPs of one call of a compiled (per device program) or lowered program from XLA's cost
  analysis; None where the backend gives none."""
  try:
    cost = program.cost_analysis()
  except Exception as e:  # pylint: disable=broad-except  # backends without it
    logging.warning("cost_analysis failed: %s", e)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def model_flops(config, num_classes, impl: str = "xla") -> float | None:
  """The model's work per step: XLA's cost analysis of the *lowered* step (before XLA hands
  convolutions to cuDNN, whose custom calls the compiled program's analysis does not count)
  with every convolution in its direct form (``conv_kernels.conv_implementation('xla')``), for the
  whole global batch on one device. What the PyTorch peer counts; MFU uses it. (``impl``
  another of ``conv_kernels.CONV_IMPLS``: what that path executes, e.g. "auto" on CPU.)"""
  from attrdis import conv_kernels  # pylint: disable=g-import-not-at-top

  try:
    models_ = ts.create_models(config, num_classes)
    # Lowered for the CPU backend, which every JAX has: on GPUs the lowered program's cost
    # analysis is not available, and the count does not depend on the backend.
    mesh = step_lib.make_mesh(jax.devices("cpu")[:1])
    replicated, data = step_lib.shardings(mesh)
    state = jax.eval_shape(lambda: ts.create_train_state(models_, config.seed))
    state = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), state
    )
    s, b = config.image_size, config.batch_size
    batch = {
      "image": jax.ShapeDtypeStruct((b, s, s, 3), "float32", sharding=data),
      "label": jax.ShapeDtypeStruct((b, len(num_classes)), "int32", sharding=data),
    }
    with conv_kernels.conv_implementation(impl):
      lowered = step_lib.jit_train_step(models_, config, mesh).lower(state, batch)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("lowering the step for its cost analysis failed: %s", e)
    return None
  return cost_flops(lowered)


def compiled_memory(compiled) -> dict | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  names = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
  )
  return {n: int(getattr(m, n)) for n in names if hasattr(m, n)}


def peak_memory(devices) -> int | None:
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def time_calls(
  fn: Callable[[], Any], samples: int, window: int, cpu_times: list | None = None
) -> list[float]:
  """Wall seconds per call: each sample dispatches ``window`` calls back to back, then waits.
  With ``cpu_times``, also appends this process' CPU seconds per call (all threads): on a
  shared host that is steadier than wall time."""
  times = []
  for _ in range(samples):
    t0, c0 = time.perf_counter(), time.process_time()
    out = None
    for _ in range(window):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / window)
    if cpu_times is not None:
      cpu_times.append((time.process_time() - c0) / window)
  return times


def profile_summary(trace_dir: str, top: int = 25) -> dict | None:
  """Device time by kernel from a jax.profiler trace: the busiest kernels, and the share of
  matmul/conv kernels vs the rest (what bounds the step). None where no device plane exists
  (the CPU backend records no per-kernel events)."""
  import glob  # pylint: disable=g-import-not-at-top

  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  if not files:
    return None
  data = jax.profiler.ProfileData.from_file(files[-1])
  by_name: dict[str, list[float]] = {}
  lines_total: dict[str, float] = {}
  span = [None, None]
  for plane in data.planes:
    if not plane.name.startswith("/device:"):
      continue
    for line in plane.lines:
      if "stream" not in line.name.lower():
        continue
      for ev in line.events:
        dur = ev.duration_ns
        entry = by_name.setdefault(ev.name, [0.0, 0])
        entry[0] += dur
        entry[1] += 1
        lines_total[f"{plane.name} {line.name}"] = (
          lines_total.get(f"{plane.name} {line.name}", 0.0) + dur
        )
        start = ev.start_ns
        span[0] = start if span[0] is None else min(span[0], start)
        span[1] = start + dur if span[1] is None else max(span[1], start + dur)
  if not by_name:
    return None
  total = sum(v[0] for v in by_name.values())
  matmul_words = (
    "gemm",
    "conv",
    "xmma",
    "cutlass",
    "wgmma",
    "sm90",
    "sm80",
    "cudnn",
    "dot",
    "matmul",
    "triton_gemm",
  )
  is_matmul = lambda n: any(w in n.lower() for w in matmul_words)
  matmul = sum(v[0] for n, v in by_name.items() if is_matmul(n))
  rows = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
  return {
    "trace": files[-1],
    "kernel_time_s": total / 1e9,
    "span_s": (span[1] - span[0]) / 1e9 if span[0] is not None else None,
    "busy_fraction": total / (span[1] - span[0])
    if span[0] is not None and span[1] > span[0]
    else None,
    "matmul_conv_fraction": matmul / total if total else None,
    "num_kernels": sum(v[1] for v in by_name.values()),
    "top_kernels": [
      {"name": n[:160], "s": v[0] / 1e9, "share": v[0] / total, "calls": v[1]} for n, v in rows
    ],
    "streams": {k: v / 1e9 for k, v in lines_total.items()},
  }


def measure_peak(dtype, device, size: int = 0) -> dict:
  """FLOP/s of a large square matmul in ``dtype`` on one device (median of timed calls)."""
  n = size or (2048 if device.platform == "cpu" else 8192)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(ka, (n, n), jnp.float32).astype(dtype), device)
  b = jax.device_put(jax.random.normal(kb, (n, n), jnp.float32).astype(dtype), device)
  mm = jax.jit(jnp.matmul).lower(a, b).compile()
  jax.block_until_ready(mm(a, b))
  t0 = time.perf_counter()
  jax.block_until_ready(mm(a, b))
  one = time.perf_counter() - t0
  window = max(1, min(50, int(0.2 / max(one, 1e-6))))
  times = time_calls(lambda: mm(a, b), samples=5 if device.platform == "cpu" else 10, window=window)
  flops = 2.0 * n**3
  med = statistics.median(times)
  return {
    "flops_per_s": flops / med,
    "best_flops_per_s": flops / min(times),
    "n": n,
    "dtype": jnp.dtype(dtype).name,
    "seconds": med,
  }


def synthetic_batch(
  batch_size: int, image_size: int, num_classes: Sequence[int], sharding, seed: int = 0
) -> dict:
  """A batch like the input pipeline's (images in [-1, 1], int32 labels), made on device."""

  def make(key):
    ki, kl = jax.random.split(key)
    image = jax.random.uniform(ki, (batch_size, image_size, image_size, 3), jnp.float32, -1.0, 1.0)
    labels = [
      jax.random.randint(k, (batch_size,), 0, n)
      for k, n in zip(jax.random.split(kl, len(num_classes)), num_classes)
    ]
    return {"image": image, "label": jnp.stack(labels, axis=1).astype(jnp.int32)}

  return jax.jit(make, out_shardings=sharding)(jax.random.key(seed))


def default_window(devices) -> int:
  return _WINDOW.value or (1 if devices[0].platform == "cpu" else 10)


class CacheHits:
  """Counts JAX's persistent compilation cache hits inside a ``with`` block."""

  EVENT = "/jax/compilation_cache/cache_hits"

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, **kwargs) -> None:
    del kwargs
    if event == self.EVENT:
      self.count += 1

  def __enter__(self) -> "CacheHits":
    jax.monitoring.register_event_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_listener(self._listen)


def timed_compile(fn, state, batch) -> tuple[Any, dict]:
  """Lowers and compiles ``fn`` for (state, batch); returns the compiled step and the wall and
  process-CPU seconds of each stage, with whether the compile was read from the persistent
  compilation cache."""
  with CacheHits() as hits:
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = fn.lower(state, batch)
    t1, c1 = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
  return compiled, {
    "trace_s": t1 - t0,
    "compile_s": t2 - t1,
    "trace_process_cpu_s": c1 - c0,
    "compile_process_cpu_s": c2 - c1,
    "from_cache": hits.count > 0,
  }


def benchmark_train(
  config,
  num_classes,
  devices,
  *,
  steps: int,
  warmup: int,
  window: int,
  peak: bool = True,
  matmul_size: int = 0,
  profile_dir: str = "",
) -> dict:
  """Compiles and times the train step; returns the JSON-able result."""
  configuration.validate(config)
  if config.batch_size % len(devices):
    raise BenchmarkError(
      f"config.batch_size={config.batch_size} does not divide over {len(devices)} devices"
    )
  mesh = step_lib.make_mesh(devices)
  replicated, data = step_lib.shardings(mesh)
  models = ts.create_models(config, num_classes, num_train_steps=1000)
  schedule = ts.learning_rate_schedule(config, 1000)
  state = jax.device_put(ts.create_train_state(models, config.seed), replicated)
  batch = synthetic_batch(config.batch_size, config.image_size, num_classes, data, config.seed)
  jax.block_until_ready((state, batch))

  compiled, first = timed_compile(
    step_lib.jit_train_step(models, config, mesh, schedule), state, batch
  )
  # The same step traced and compiled once more after jax.clear_caches(): what a new process
  # (a resumed run) pays with the persistent cache the first compile filled.
  jax.clear_caches()
  _, warm = timed_compile(step_lib.jit_train_step(models, config, mesh, schedule), state, batch)
  flops_device = cost_flops(compiled)
  flops_model = model_flops(config, num_classes)

  t3 = time.perf_counter()
  state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  first_step = time.perf_counter() - t3
  for _ in range(max(warmup - 1, 0)):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))

  holder = {"state": state}

  def one_step():
    holder["state"], m = compiled(holder["state"], batch)
    return holder["state"], m

  cpu_times: list[float] = []
  times = time_calls(one_step, steps, window, cpu_times)
  profile = None
  if profile_dir:  # a few more steps under the profiler (not timed); never fatal
    try:
      jax.profiler.start_trace(profile_dir)
      try:
        time_calls(one_step, 1, min(window, 3))
      finally:
        jax.profiler.stop_trace()
      profile = profile_summary(profile_dir)
    except Exception as e:  # pylint: disable=broad-except
      profile = {"error": f"{type(e).__name__}: {e}"}
  final_metrics = {k: float(v) for k, v in jax.device_get(one_step()[1]).items()}
  finite = all(np.isfinite(v) for v in final_metrics.values())

  step = summarize(times)
  n_dev = len(devices)
  result: dict[str, Any] = {
    "part": "train",
    "dataset": config.dataset.name,
    "image_size": config.image_size,
    "batch_size": config.batch_size,
    "num_attributes": len(num_classes),
    "num_classes": list(num_classes),
    "dtype": config.dtype,
    "model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.model.items()},
    "trace_s": first["trace_s"],
    "compile_s": first["compile_s"],
    # compile_from_cache false: compile_s is a cold compile (with a new --compilation_cache
    # folder it always is); the warm_* fields time the same step traced and compiled again
    # after jax.clear_caches(), read back from the persistent cache when it is on.
    "compile_from_cache": first["from_cache"],
    "compilation_cache": jax.config.jax_compilation_cache_dir,
    "warm_trace_s": warm["trace_s"],
    "warm_compile_s": warm["compile_s"],
    "warm_compile_from_cache": warm["from_cache"],
    "trace_process_cpu_s": first["trace_process_cpu_s"],
    "compile_process_cpu_s": first["compile_process_cpu_s"],
    "first_step_s": first_step,
    "window": window,
    "step_s": step,
    "images_per_s": config.batch_size / step["median"],
    "images_per_s_per_device": config.batch_size / step["median"] / n_dev,
    "step_process_cpu_s": summarize(cpu_times),
    "model_flops_per_step": flops_model,
    "model_flops_source": "XLA cost_analysis of the lowered step, direct convolutions",
    "flops_per_step": None if flops_device is None else flops_device * n_dev,
    "flops_source": "XLA cost_analysis of the compiled step (per-device program × devices; "
    "on GPUs it omits the cuDNN convolutions)",
    "metrics_finite": finite,
    "loss_g": final_metrics.get("loss_g"),
  }
  if flops_device is not None:
    result["executed_flops_per_s"] = flops_device * n_dev / step["median"]
  if flops_model is not None:
    result["achieved_flops_per_s"] = flops_model / step["median"]
    result["achieved_flops_per_s_per_device"] = flops_model / n_dev / step["median"]
  if peak:
    p = measure_peak(ts.compute_dtype(config), devices[0], matmul_size)
    result["peak_matmul"] = p
    result["peak_flops_per_s"] = p["flops_per_s"]
    if flops_model is not None:  # model FLOPs utilisation, per device
      result["mfu"] = result["achieved_flops_per_s_per_device"] / p["flops_per_s"]
    kind = devices[0].device_kind
    for (name, dt), v in SPEC_PEAKS.items():
      if name in kind and dt == config.dtype and flops_model is not None:
        result["spec_peak_flops_per_s"] = v
        result["mfu_vs_spec"] = result["achieved_flops_per_s_per_device"] / v
  result["compiled_memory"] = compiled_memory(compiled)
  result["peak_memory_bytes"] = peak_memory(devices)
  if profile_dir:
    result["profile"] = profile
  result["environment"] = environment(devices)
  return result


def benchmark_input(config, *, batches: int, workers: int, train_json: str = "") -> dict:
  """Images/s delivered by the grain loader (host numpy batches, then also put on device)."""
  from attrdis import input_pipeline  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top,reimported

  absl_flags.FLAGS.mark_as_parsed()
  configuration.validate(config)
  try:
    builder, info = input_pipeline.load(config)
  except Exception as e:  # pylint: disable=broad-except
    raise BenchmarkError(
      f"dataset {config.dataset.name!r} ({config.dataset.builder_config or 'default'}) is not "
      f"available here ({type(e).__name__}: {str(e)[:300]}); measure the input pipeline with a "
      "config whose data is present, e.g. --config=configs/synthetic.py"
    ) from None
  worker_count = None if workers < 0 else workers
  loader = input_pipeline.create_loader(
    config, builder, "train", train=True, worker_count=worker_count
  )
  num_workers = (
    input_pipeline.default_num_workers(config.dataset.num_workers)
    if worker_count is None
    else worker_count
  )
  t0 = time.perf_counter()
  it = iter(loader)
  first = next(it)
  first_batch_s = time.perf_counter() - t0
  for _ in range(max(5, 2 * num_workers)):  # every worker started and delivering
    next(it)
  t1 = time.perf_counter()
  n = 0
  for _ in range(batches):
    b = next(it)
    n += b["image"].shape[0]
  host_s = time.perf_counter() - t1

  mesh = step_lib.make_mesh()
  _, data = step_lib.shardings(mesh)
  t2 = time.perf_counter()
  m, out = 0, None
  for out in step_lib.prefetch_to_device(itertools.islice(it, batches), data):
    m += out["image"].shape[0]
  jax.block_until_ready(out)
  device_s = time.perf_counter() - t2
  result = {
    "part": "input",
    "dataset": info.name,
    "builder_config": builder.builder_config.name,
    "stored_image_size": info.stored_image_size,
    "image_size": config.image_size,
    "batch_size": config.batch_size,
    "num_train_examples": info.num_train,
    "workers": num_workers,
    "first_batch_s": first_batch_s,
    "batches": batches,
    "images_per_s": n / host_s,
    # workers = 0 reads in this process: one reader either way.
    "images_per_s_per_worker": n / host_s / max(num_workers, 1),
    "images_per_s_to_device": m / device_s,
    "image_shape": list(first["image"].shape),
    "environment": environment(jax.devices()),
  }
  if train_json:
    try:
      with open(train_json) as f:
        train = json.load(f)
      result["train_images_per_s"] = train["images_per_s"]
      # The lower of the two rates: the device phase can start on batches the workers
      # buffered before it.
      delivered = min(result["images_per_s"], result["images_per_s_to_device"])
      result["ratio_to_train"] = delivered / train["images_per_s"]
      result["train_json"] = train_json
    except (OSError, ValueError, KeyError) as e:
      result["train_json_error"] = f"{train_json}: {e}"
  return result


def benchmark_eval(
  config, num_classes, devices, *, steps: int, window: int, batch_size: int = 0
) -> dict:
  """Images/s of the evaluator's compute: translation (encode, swap one code, decode), the
  FID Inception pool3 features of the translations (resized to 299) and the classifiers."""
  from attrdis import inception  # pylint: disable=g-import-not-at-top

  configuration.validate(config)
  b = batch_size or config.batch_size
  device = devices[0]
  models = ts.create_models(config, num_classes)
  params = jax.device_put(ts.create_train_state(models, config.seed).params, device)
  net = inception.FIDInceptionV3()
  x299 = jnp.zeros((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3), jnp.float32)
  inc_vars = jax.device_put(
    jax.jit(lambda k: net.init(k, x299, preprocess_input=False))(jax.random.key(1)), device
  )
  s = config.image_size
  x = jax.device_put(
    jax.random.uniform(jax.random.key(2), (b, s, s, 3), jnp.float32, -1, 1), device
  )

  def translate(p, x):
    codes = models.gen.apply({"params": p["gen"]}, x, method="encode")
    target = [jnp.roll(z, 1, axis=0) for z in codes]
    codes = [target[0]] + list(codes[1:])  # attribute 1 taken from another image
    return models.gen.apply({"params": p["gen"]}, codes, method="decode")

  def features(v, y):  # y in [-1, 1]
    return net.apply(v, inception.preprocess((y + 1.0) / 2.0), preprocess_input=False)

  def classify(p, y):
    return [jnp.argmax(l, -1) for l in models.cls.apply({"params": p["cls"]}, y)]

  parts = {
    "translate": (translate, (params, x)),
    "inception": (features, (inc_vars, x)),
    "classifiers": (classify, (params, x)),
  }
  result: dict[str, Any] = {
    "part": "eval",
    "dataset": config.dataset.name,
    "image_size": s,
    "batch_size": b,
    "num_classes": list(num_classes),
    "dtype": config.dtype,
    "note": (
      "random weights (speed does not depend on them); the "
      "model's own C_m stand in for the evaluation CNNs of "
      "attrdis.evaluation.networks, which are smaller"
    ),
  }
  for name, (f, args) in parts.items():
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    times = summarize(time_calls(lambda: compiled(*args), steps, window))
    result[name] = {
      "compile_s": compile_s,
      "batch_s": times,
      "images_per_s": b / times["median"],
      "flops_per_batch": cost_flops(compiled),
    }
  # The evaluator runs the three one after the other on each batch.
  result["images_per_s"] = 1.0 / sum(1.0 / result[n]["images_per_s"] for n in parts)
  result["images_per_s_note"] = "translate → Inception features + classifiers, in sequence"
  result["environment"] = environment(devices)
  return result


def emit(result: dict, output: str = "") -> None:
  text = json.dumps(result, indent=1, sort_keys=False, default=str)
  print(text, flush=True)
  if output:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
      f.write(text + "\n")


def main(argv):
  del argv  # no positional arguments (cli.run refuses them)
  config = _CONFIG.value
  compilation_cache.enable(_COMPILATION_CACHE.value)
  devices = jax.devices()
  if _DEVICES.value:
    devices = devices[: _DEVICES.value]
  try:
    if _PART.value == "train":
      result = benchmark_train(
        config,
        num_classes_of(config, _NUM_CLASSES.value),
        devices,
        steps=_STEPS.value,
        warmup=_WARMUP.value,
        window=default_window(devices),
        peak=_PEAK.value,
        matmul_size=_MATMUL_SIZE.value,
        profile_dir=_PROFILE_DIR.value,
      )
    elif _PART.value == "input":
      result = benchmark_input(
        config, batches=_BATCHES.value, workers=_WORKERS.value, train_json=_TRAIN_JSON.value
      )
    else:
      result = benchmark_eval(
        config,
        num_classes_of(config, _NUM_CLASSES.value),
        devices,
        steps=_STEPS.value,
        window=default_window(devices),
        batch_size=_EVAL_BATCH.value,
      )
  except errors.UserError as e:
    # The JSON says it too, for scripts that collect the results; then the error line.
    emit({"part": _PART.value, "error": str(e)}, _OUTPUT.value)
    raise
  result["config"] = config_flags.get_config_filename(FLAGS["config"])
  result["argv"] = sys.argv[1:]
  emit(result, _OUTPUT.value)


if __name__ == "__main__":
  cli.run(main, FLAGS)

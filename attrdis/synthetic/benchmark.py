"""Rendering speed, build time and expression visibility of the synthetic faces.

    python -m attrdis.synthetic.benchmark [--image_size=64] [--batch=256] [--seconds=3]
                                          [--config=64px] [--no_build]
                                          [--visibility_sizes=32,64,128]

Renders on one core (the process is pinned to one CPU; numpy's elementwise kernels are
single-threaded) and reports images per second of wall time and of CPU time (the latter is
the more stable figure on a shared machine), then times building a builder config (the
default, 64px) into a temporary directory, and prints the share of pixels that an
expression-only change moves by more than 0.1 (``attrdis.synthetic.visibility``) for each
expression and intensity at each of ``--visibility_sizes``. ``--help`` lists the flags; a bad
command line is one ``error: ...`` line (status 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
import tempfile
import time
from typing import Sequence

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

from absl import flags  # noqa: E402

from attrdis import cli  # noqa: E402
from attrdis import errors  # noqa: E402
from attrdis.synthetic import design as design_lib  # noqa: E402
from attrdis.synthetic import render as render_lib  # noqa: E402
from attrdis.synthetic import visibility  # noqa: E402
from attrdis.synthetic.factors import stack  # noqa: E402


FLAGS = flags.FlagValues()
flags.DEFINE_integer(
  "image_size",
  64,
  "Side of the rendered faces.",
  lower_bound=render_lib.MIN_SIZE,
  upper_bound=render_lib.MAX_SIZE,
  flag_values=FLAGS,
)
flags.DEFINE_integer("batch", 256, "Faces per rendered batch.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float("seconds", 3.0, "Rendering time measured.", lower_bound=0.01, flag_values=FLAGS)
flags.DEFINE_enum(
  "config",
  design_lib.DEFAULT_CONFIG,
  list(design_lib.CONFIGS),
  "The builder config whose build is timed.",
  flag_values=FLAGS,
)
flags.DEFINE_bool("no_build", False, "Skip timing the build.", flag_values=FLAGS)
flags.DEFINE_list(
  "visibility_sizes",
  ["32", "64", "128"],
  "Image sizes of the expression-visibility table ('' for none).",
  flag_values=FLAGS,
)


def builder_module():
  """The synthetic_faces builder module, installed or (before installation) from the repo."""
  if importlib.util.find_spec("attrdis_datasets") is None:
    root = pathlib.Path(__file__).resolve().parents[2] / "datasets"
    spec = importlib.util.spec_from_file_location(
      "attrdis_datasets", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["attrdis_datasets"] = module
    spec.loader.exec_module(module)
  return importlib.import_module("attrdis_datasets.synthetic_faces.synthetic_faces_dataset_builder")


def render_speed(image_size: int = 64, batch: int = 256, seconds: float = 3.0) -> dict:
  """Images per second (wall and CPU) rendering dataset faces in batches on one core."""
  _, design = design_lib.CONFIGS[design_lib.DEFAULT_CONFIG]
  factors = stack([f for _, _, f in design.examples("train")][:batch])
  affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
  if affinity:
    os.sched_setaffinity(0, {min(affinity)})
  try:
    render_lib.render_batch(factors, image_size)  # warm up
    best_wall = best_cpu = 0.0
    for _ in range(3):
      n, w0, c0 = 0, time.perf_counter(), time.process_time()
      while time.perf_counter() - w0 < seconds / 3:
        render_lib.render_batch(factors, image_size)
        n += len(factors)
      best_wall = max(best_wall, n / (time.perf_counter() - w0))
      best_cpu = max(best_cpu, n / (time.process_time() - c0))
  finally:
    if affinity:
      os.sched_setaffinity(0, affinity)
  return {"images_per_s_wall": best_wall, "images_per_cpu_s": best_cpu}


def build_time(config: str = design_lib.DEFAULT_CONFIG) -> dict:
  """Seconds to build ``config`` into a temporary directory (wall and CPU), and its size."""
  sf = builder_module()
  with tempfile.TemporaryDirectory() as tmp:
    w0, c0 = time.perf_counter(), time.process_time()
    builder = sf.Builder(config=config, data_dir=tmp, file_format="array_record")
    builder.download_and_prepare()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    size = sum(p.stat().st_size for p in pathlib.Path(tmp).rglob("*") if p.is_file())
    num = {s: builder.info.splits[s].num_examples for s in ("train", "test")}
  return {"wall_s": wall, "cpu_s": cpu, "bytes": size, "examples": num}


def main(argv: Sequence[str]) -> None:
  del argv  # no positional arguments (cli.run refuses them)
  try:
    sizes = [int(v) for v in FLAGS.visibility_sizes if v.strip()]
  except ValueError:
    raise errors.CommandLineError(
      f"--visibility_sizes={','.join(FLAGS.visibility_sizes)}: give image sizes "
      "separated by commas, e.g. 32,64,128"
    ) from None
  bad = [v for v in sizes if not render_lib.MIN_SIZE <= v <= render_lib.MAX_SIZE]
  if bad:
    raise errors.CommandLineError(
      f"--visibility_sizes: {bad[0]} is not in [{render_lib.MIN_SIZE}, {render_lib.MAX_SIZE}]"
    )
  r = render_speed(FLAGS.image_size, FLAGS.batch, FLAGS.seconds)
  print(
    f"render {FLAGS.image_size}px, batches of {FLAGS.batch}, one core: "
    f"{r['images_per_s_wall']:.0f} images/s wall, "
    f"{r['images_per_cpu_s']:.0f} images/CPU-s",
    flush=True,
  )
  if not FLAGS.no_build:
    b = build_time(FLAGS.config)
    print(
      f"build synthetic_faces/{FLAGS.config} ({b['examples']['train']} train + "
      f"{b['examples']['test']} test images, {b['bytes'] / 2**20:.1f} MiB): "
      f"{b['wall_s']:.1f} s wall, {b['cpu_s']:.1f} s CPU",
      flush=True,
    )
  if sizes:
    print(visibility_report(sizes), flush=True)


def visibility_report(sizes: Sequence[int], intensities=(0.2, 0.4, 0.6, 0.8, 1.0)) -> str:
  """The expression-visibility table as text: one row per expression and size."""
  head = "  ".join(f"{t:>5.1f}" for t in intensities)
  lines = [
    "pixels moved by > 0.1 by an expression-only change (share of the image; "
    "64 random faces), by intensity:",
    f"{'expression':<10} {'size':>5}  {head}",
  ]
  for size in sizes:
    for name, fractions in visibility.visibility_table(size, intensities).items():
      row = "  ".join(f"{100 * f:>4.1f}%" for f in fractions)
      lines.append(f"{name:<10} {size:>4}px  {row}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main, FLAGS)

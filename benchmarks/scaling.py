r"""Scaling of the train step with the number of attributes M and the image size.

    python benchmarks/scaling.py [--sizes=64,128] [--time_sizes=64] [--max_m=4] \
        [--scaling_batch=16] [--timed_steps=2] [--scaling_output=scaling.json]

FLOPs per step for every (M, size) come from XLA's cost analysis of the lowered step (no
compilation needed): "model" FLOPs with XLA's own convolutions (the direct algorithm, what a GPU
runs and what the PyTorch peer counts) and "cpu path" FLOPs with this backend's choice
(Winograd / im2col on CPU). Steps are timed (compiled, after a warm-up) only for --time_sizes.
Classes per attribute: MultiPIE's identity, expression, illumination (337, 4, 20), and a
fourth attribute of 15 classes for M = 4 (e.g. pose); batch 16, the paper's widths.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
import jax

from attrdis import benchmark
from attrdis import cli
from attrdis import configuration
from attrdis import errors

FLAGS = flags.FlagValues()
_SIZES = flags.DEFINE_list("sizes", ["64", "128"], "Image sizes for FLOPs.", flag_values=FLAGS)
_TIME_SIZES = flags.DEFINE_list("time_sizes", ["64"], "Image sizes also timed.", flag_values=FLAGS)
_MAX_M = flags.DEFINE_integer(
  "max_m", 4, "Largest number of attributes.", lower_bound=1, upper_bound=4, flag_values=FLAGS
)
_TIMED_STEPS = flags.DEFINE_integer(
  "timed_steps", 2, "Timed steps per timed point.", lower_bound=1, flag_values=FLAGS
)
_BATCH = flags.DEFINE_integer("scaling_batch", 16, "Batch size.", lower_bound=1, flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string("scaling_output", "", "Write the JSON here too.", flag_values=FLAGS)

CLASSES = (337, 4, 20, 15)


def main(argv):
  del argv
  rows = []
  try:
    sizes = [int(s) for s in _SIZES.value]
  except ValueError:
    raise errors.CommandLineError(
      f"--sizes={','.join(_SIZES.value)}: give image sizes separated by commas, e.g. 64,128"
    ) from None
  for size in sizes:
    for m in range(1, _MAX_M.value + 1):
      config = configuration.base_config()
      config.image_size = size
      config.batch_size = _BATCH.value
      num_classes = CLASSES[:m]
      row = {
        "M": m,
        "image_size": size,
        "batch_size": _BATCH.value,
        "num_classes": list(num_classes),
        "model_flops_per_step": benchmark.model_flops(config, num_classes, "xla"),
        "cpu_path_flops_per_step": benchmark.model_flops(config, num_classes, "auto"),
      }
      if str(size) in _TIME_SIZES.value:
        t = time.time()
        r = benchmark.benchmark_train(
          config,
          num_classes,
          jax.devices()[:1],
          steps=_TIMED_STEPS.value,
          warmup=1,
          window=1,
          peak=False,
        )
        row.update(
          compile_s=r["compile_s"],
          step_s=r["step_s"]["median"],
          step_process_cpu_s=r["step_process_cpu_s"]["median"],
          images_per_s=r["images_per_s"],
          load_average=r["environment"]["load_average"],
          wall_s=time.time() - t,
        )
      rows.append(row)
      print(json.dumps(row), flush=True)
  base = {r["image_size"]: r for r in rows if r["M"] == 1}
  print(
    "\n| M | size | model GFLOP/step | × M=1 | CPU-path GFLOP/step | step s (CPU s) | images/s |"
  )
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    timed = (
      (f"{r['step_s']:.1f} ({r['step_process_cpu_s']:.1f})", f"{r['images_per_s']:.2f}")
      if "step_s" in r
      else ("—", "—")
    )
    print(
      f"| {r['M']} | {r['image_size']} | {r['model_flops_per_step'] / 1e9:.0f} | "
      f"{r['model_flops_per_step'] / base[r['image_size']]['model_flops_per_step']:.2f} | "
      f"{r['cpu_path_flops_per_step'] / 1e9:.0f} | {timed[0]} | {timed[1]} |"
    )
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump({"rows": rows, "host_cpus": os.cpu_count(), "argv": sys.argv[1:]}, f, indent=1)


if __name__ == "__main__":
  cli.run(main, FLAGS)

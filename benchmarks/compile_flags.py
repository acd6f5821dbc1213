"""CPU time of compiling the tests' train step under three sets of XLA:CPU flags.

The step is the one most tests compile: ``tests/tiny.py``'s config (16 px, narrow widths, two
attributes), jitted over 4 simulated CPU devices, compiled with JAX's compilation cache off.
The flag sets:

* ``default``: XLA:CPU as it comes;
* ``llvm_o0``: LLVM at optimisation level 0 (``--xla_backend_optimization_level=0``);
* ``tests``: what the suite uses, ``tiny.xla_flags()`` (level 0, the older loop emitters
  instead of the MLIR fusion emitters, one LLVM module instead of several).

XLA reads its flags once per process, so each compile runs in a process of its own; the sets
are taken in turn, --rounds times, so that a busy machine slows all of them alike. Prints a
JSON object: per set, the median CPU seconds (all threads of the process) and wall seconds of
``lower(...).compile()``, and the ratio of each set's CPU seconds to ``default``'s. Usage:

    python benchmarks/compile_flags.py [--rounds=3] [--out=FILE.json]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import flags

from attrdis import cli
from attrdis import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import tiny  # noqa: E402  (tests/tiny.py: the tests' config and XLA flags)

DEVICES = 4
SETS = {
  "default": f"--xla_force_host_platform_device_count={DEVICES}",
  "llvm_o0": f"--xla_force_host_platform_device_count={DEVICES} --xla_backend_optimization_level=0",
  "tests": tiny.xla_flags(DEVICES),
}

FLAGS = flags.FlagValues()
flags.DEFINE_integer(
  "rounds", 3, "Rounds of the flag sets, in turn.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_string("out", "", "Also write the JSON to this file.", flag_values=FLAGS)
flags.DEFINE_bool("child", False, "(internal) compile once and print the times.", flag_values=FLAGS)


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def compile_once() -> dict:
  """In this process (XLA_FLAGS already set): lower and compile the tests' train step."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from attrdis import checkpoints  # pylint: disable=g-import-not-at-top
  from attrdis import train_state as ts  # pylint: disable=g-import-not-at-top
  from attrdis import train_step as step_lib  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_enable_compilation_cache", False)
  config = tiny.tiny_config()
  models = ts.create_models(config, (5, 3), num_train_steps=10)
  mesh = step_lib.make_mesh()
  replicated, data = step_lib.shardings(mesh)
  state = checkpoints.abstract(
    jax.eval_shape(lambda: ts.create_train_state(models, config.seed)), replicated
  )
  s, b = config.image_size, config.batch_size
  batch = {
    "image": jax.ShapeDtypeStruct((b, s, s, 3), np.uint8, sharding=data),
    "label": jax.ShapeDtypeStruct((b, 2), np.int32, sharding=data),
  }
  lowered = step_lib.jit_train_step(models, config, mesh).lower(state, batch)
  cpu, wall = cpu_seconds(), time.perf_counter()
  lowered.compile()
  return {
    "compile_cpu_s": cpu_seconds() - cpu,
    "compile_wall_s": time.perf_counter() - wall,
    "devices": jax.device_count(),
  }


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps(compile_once()))
    return
  runs = {name: [] for name in SETS}
  for r in range(FLAGS.rounds):
    for name, xla_flags in SETS.items():
      env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
      proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
      )
      if proc.returncode != 0:
        errors.fail(
          f"flag set {name} ({xla_flags}): the compile failed: {errors.one_line(proc.stderr[-500:])}"
        )
      runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(f"round {r + 1}/{FLAGS.rounds} {name}: {runs[name][-1]}", file=sys.stderr)
  median = {
    name: {k: statistics.median(run[k] for run in rs) for k in ("compile_cpu_s", "compile_wall_s")}
    for name, rs in runs.items()
  }
  result = {
    "step": "tests/tiny.py config, 4 simulated CPU devices, compilation cache off",
    "rounds": FLAGS.rounds,
    "xla_flags": SETS,
    "median": median,
    "cpu_ratio_to_default": {
      name: m["compile_cpu_s"] / median["default"]["compile_cpu_s"] for name, m in median.items()
    },
    "all_rounds": runs,
  }
  from attrdis import benchmark  # pylint: disable=g-import-not-at-top  (JAX: not for --help)

  benchmark.emit(result, FLAGS.out)


if __name__ == "__main__":
  cli.run(main, FLAGS)

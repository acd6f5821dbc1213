"""Trains attrdis: ``python run_train.py --config=configs/synthetic.py --workdir=W``.

Any config field can be overridden: ``--config.batch_size=32 --config.num_train_steps=100``.
Started again on the same workdir, it resumes from the latest checkpoint (if that one is
damaged, ``--config.resume_from_intact=True`` moves it aside and resumes from the newest intact
one). One trainer per workdir: a second one on a workdir in use stops at once. SIGTERM or
Ctrl-C saves a checkpoint at the current step and exits with status 0.

Several processes (one per host, or per GPU): pass ``--distributed`` and JAX finds the
coordinator, the process count and this process' id from the cluster's environment (SLURM,
Open MPI, Cloud TPU, GKE, ...), or give them with ``--coordinator_address``,
``--num_processes`` and ``--process_id``. See docs/distributed.md.

Errors a user can cause end with one ``error: ...`` line (status 1; 2 for a bad command
line; 3 when training stopped on a non-finite loss; 130 for a second Ctrl-C). ``--help`` lists
the flags.
"""

import os

from absl import flags
from absl import logging
from ml_collections import config_flags

from attrdis import cli
from attrdis import compilation_cache
from attrdis import errors

FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "workdir", None, "Where checkpoints, metrics and samples go.", flag_values=FLAGS
)
config_flags.DEFINE_config_file(
  "config", None, "A config file (configs/*.py).", flag_values=FLAGS, lock_config=True
)
flags.DEFINE_bool(
  "distributed",
  False,
  "Run as one of several processes (jax.distributed). Implied by "
  "--coordinator_address or $JAX_COORDINATOR_ADDRESS; values not given are "
  "detected from the cluster environment.",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0's coordinator (jax.distributed).",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "num_processes", None, "Number of processes (jax.distributed).", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
  "process_id", None, "This process' id, 0..num_processes-1.", lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_string("compilation_cache", None, compilation_cache.FLAG_HELP, flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


def init_distributed() -> None:
  """Calls jax.distributed.initialize when asked to (flags or environment)."""
  given = {
    k: FLAGS[k].value
    for k in ("coordinator_address", "num_processes", "process_id")
    if FLAGS[k].value is not None
  }
  if not (FLAGS.distributed or given or os.environ.get("JAX_COORDINATOR_ADDRESS")):
    return
  import jax  # pylint: disable=g-import-not-at-top

  try:
    jax.distributed.initialize(**given)
  except Exception as e:  # pylint: disable=broad-except
    shown = " ".join(f"--{k}={v}" for k, v in given.items()) or "--distributed"
    raise errors.InputError(
      f"{shown}: jax.distributed.initialize failed ({errors.one_line(str(e))[:300]}). "
      "Check the coordinator address (process 0's host:port, reachable from every "
      "process), the process count and ids, or run without --distributed."
    ) from None
  logging.info(
    "jax.distributed: process %d of %d, %d local / %d global devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def load_config():
  """FLAGS.config; a config file that failed to load raises OSError on first access."""
  config = FLAGS.config
  try:
    config.keys()
  except OSError as e:
    path = config_flags.get_config_filename(FLAGS["config"])
    raise errors.InputError(f"--config={path}: {errors.os_reason(e)}") from None
  return config


def main(argv):
  del argv  # no positional arguments (cli.run refuses them)
  logging.set_verbosity(logging.INFO)
  config = load_config()
  from attrdis import configuration  # pylint: disable=g-import-not-at-top

  configuration.validate(config)  # before the slow imports and jax.distributed
  init_distributed()
  compilation_cache.enable(FLAGS.compilation_cache)
  from attrdis import train  # pylint: disable=g-import-not-at-top

  train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main, FLAGS)

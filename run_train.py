"""Trains attrdis: ``python run_train.py --config=configs/synthetic.py --workdir=W``.

Any config field can be overridden: ``--config.batch_size=32 --config.num_train_steps=100``.
Started again on the same workdir, it resumes from the latest checkpoint.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from attrdis import checkpoints
from attrdis import train
from attrdis.configuration import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and samples go.")
config_flags.DEFINE_config_file("config", None, "A config file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ConfigError, checkpoints.CheckpointError) as e:
    logging.flush()
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)

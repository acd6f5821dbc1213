"""Trains (or checks) the evaluation networks of a workdir ahead of an evaluation.

    python -m attrdis.evaluation.train_networks --workdir=W [--steps=N] [--batch_size=B]
        [--seed=S] [--data_dir=DIR] [--classifier_dir=DIR]

The networks for W's model and dataset (``attrdis.evaluation.networks``), trained and saved in
W/eval_classifiers (or DIR) unless already there with the same settings (the evaluator's
defaults, so that ``python -m attrdis.evaluate`` then reuses them); prints their test metrics.
Bad input is one line, ``error: ...``, exit status 1 (2 for a bad command line).
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

from absl import flags

from attrdis import cli
from attrdis.evaluation import suite
from attrdis.evaluation.context import Context, Options

_DEFAULTS = Options()

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "The training workdir (its checkpoints/).", flag_values=FLAGS)
flags.DEFINE_integer(
  "steps",
  _DEFAULTS.classifier_steps,
  "Training steps of the networks.",
  lower_bound=1,
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "batch_size",
  _DEFAULTS.classifier_batch_size,
  "Training batch size of the networks.",
  lower_bound=1,
  flag_values=FLAGS,
)
flags.DEFINE_integer("seed", _DEFAULTS.seed, "The random seed.", flag_values=FLAGS)
flags.DEFINE_string(
  "data_dir",
  None,
  "Where the prepared dataset is, if not where training found it.",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "classifier_dir",
  None,
  "Where to keep the networks (default W/eval_classifiers).",
  flag_values=FLAGS,
)
flags.mark_flags_as_required(["workdir"], flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """Trains or finds the networks, prints their test metrics (absl's main; no positional
  arguments). User errors propagate to :func:`attrdis.cli.run`, which reports them."""
  del argv
  t0 = time.time()

  def progress(msg):
    print(f"[train_networks {time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

  trained = suite.load_trained(FLAGS.workdir, data_dir=FLAGS.data_dir)
  opts = Options(
    classifier_steps=FLAGS.steps,
    classifier_batch_size=FLAGS.batch_size,
    seed=FLAGS.seed,
    classifier_dir=FLAGS.classifier_dir,
  )
  model = Context(trained, FLAGS.workdir, opts, progress).eval_model()
  for k, v in sorted(model.test_metrics.items()):
    print(f"{k:<24} {v:.4f}")


if __name__ == "__main__":
  cli.run(main, FLAGS)

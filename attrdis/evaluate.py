"""The evaluator (docs/design.md §4, the paper's §IV): every metric that applies.

    python -m attrdis.evaluate --workdir=W [--step=N] [--fid_weights=FILE] [--out=FILE]
        [--transfer=mean_code|reference] [--num_pairs=256] [--batch_size=64]
        [--classifier_steps=3000] [--hopkins_draws=10] [--seed=0] [--classifier_dir=DIR]
        [--data_dir=DIR] [--no_images]

restores the checkpoint, runs the metrics below on the test split, prints a table and writes
``W/eval/<step>.json``: ``{"metrics": {name: number}, "settings": {...}, "notes": [...]}``
(plus ``W/eval/entropy_<step>.png``, ``W/eval/embeddings_<step>.png`` and sample grids).
Progress goes to stderr; bad input (no or a damaged checkpoint, a missing weights file, an
unprepared dataset) is one line, ``error: ...``, exit status 1 (2 for a bad command line).

Metrics (names as in the JSON; ``<a>`` an attribute, ``rest`` = z_0):

* ``recon/l1``, ``recon/psnr`` — Dec(Enc(x)) against x (L1 in [0, 1] pixel units, PSNR with
  peak 1, mean over images).
* ``entropy/C_<m>/z_<k>`` (Fig. 5) — mean entropy (nats) of classifier C_m's posterior on the
  codes z_k, for every pair incl. z_0; ``latent_acc/C_<m>/z_<k>`` — how often C_m(z_k) names
  the image's m label (a code that leaks attribute m scores well above chance for k ≠ m; not
  for identity, whose test identities are held out of training);
  ``entropy/off_diagonal_normalized`` — the mean over k ≠ m of entropy / log|m| (1 = uniform).
* ``knn_acc/<a>/z_<k>`` — leave-one-out 5-nearest-neighbour accuracy of attribute a's
  labels from the flattened codes z_k on the test split (chance ≈ 1/|a|): how much of a
  shows in a code, whatever the classifier heads see.
* ``hopkins/expression/<class>`` (Table III) — the Hopkins statistic of the flattened
  expression codes of each expression cluster (mean over ``--hopkins_draws`` random draws,
  ``..._std`` their spread), and ``hopkins/expression/mean``.
* ``synthesis/acc/<class>``, ``synthesis/acc_mean``, ``synthesis/acc_std`` (Table IV) — every
  neutral test image translated to every expression (the class-mean training code,
  ``--transfer=mean_code``, or the code of a test image of that class, ``reference``), read
  by a separate simple CNN (``attrdis.evaluation.networks``, trained once on the real
  training split and kept in ``W/eval_classifiers``; its own test accuracy is
  ``eval_classifier/*``);
  ``synthesis/fid`` translated vs real test images (only with ``--fid_weights``), and from the
  same features ``synthesis/kid``, ``synthesis/kid_std`` (KID: the mean and standard deviation
  over 100 subsets of min(1000, n) images, ``fid.kid_from_features``).
* Synthetic faces only, for ``--num_pairs`` random pairs (source, target) of test images of
  different (held-out) identities, for each attribute and each pair of attributes S:
  ``gt/<S>/l1``, ``gt/<S>/psnr`` of the transfer against the true rendering, beside
  ``..._source`` / ``..._target`` (the errors of returning the source or the target);
  ``transfer/<S>/acc/<b>`` — how often the evaluation networks read attribute b of the
  transfer as the target's (b in S) or the source's (b kept), over the pairs whose source and
  target differ in b (identity: nearest test-identity prototype of the regressed renderer
  parameters); ``transfer/<S>/acc_transferred``, ``acc_kept`` their means, ``truth_...`` the
  same for the true renderings (the readers' ceiling), ``acc_readable/<b>``,
  ``acc_transferred_readable``, ``acc_kept_readable`` the same over the pairs whose true
  rendering the readers get right (the readers' own errors discounted); ``intensity/corr`` — the correlation
  between the target's true expression intensity and the intensity the regressor reads from
  the expression transfer (every non-neutral test image as target, a random source),
  ``intensity/corr_truth`` on the true renderings.

The metrics live in the package ``attrdis.evaluation`` (one module per family; its
``suite`` runs them); this module is the command, and re-exports :func:`evaluate` (what the
command does) and :class:`Options` (its flags).
"""

from __future__ import annotations

import sys
import time
from typing import Mapping, Sequence

from absl import flags
from absl import logging

from attrdis import cli
from attrdis import compilation_cache
from attrdis.evaluation.context import TRANSFER_MODES, EvaluationError, Options
from attrdis.evaluation.suite import evaluate

__all__ = [
  "EvaluationError",
  "FLAGS",
  "Options",
  "evaluate",
  "format_table",
  "main",
  "options_from_flags",
]

_DEFAULTS = Options()

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "The training workdir (its checkpoints/).", flag_values=FLAGS)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=FLAGS)
flags.DEFINE_string(
  "fid_weights",
  None,
  "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or an .npz of it); "
  "without it FID is skipped.",
  flag_values=FLAGS,
)
flags.DEFINE_string("out", None, "The JSON file (default W/eval/<step>.json).", flag_values=FLAGS)
flags.DEFINE_enum(
  "transfer",
  _DEFAULTS.transfer,
  TRANSFER_MODES,
  "Table IV: the class-mean training code, or a test image's code.",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "num_pairs",
  _DEFAULTS.num_pairs,
  "Synthetic faces: random test pairs per attribute set.",
  lower_bound=1,
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "batch_size", _DEFAULTS.batch_size, "Images per jitted batch.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
  "hopkins_draws",
  _DEFAULTS.hopkins_draws,
  "Random draws the Hopkins statistic is averaged over.",
  lower_bound=1,
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "classifier_steps",
  _DEFAULTS.classifier_steps,
  "Training steps of the evaluation classifiers (trained once per workdir).",
  lower_bound=1,
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "classifier_dir",
  None,
  "Where the evaluation networks are kept (default W/eval_classifiers): "
  "models of the same dataset and image size can share one folder, so that "
  "the networks are trained once.",
  flag_values=FLAGS,
)
flags.DEFINE_integer("seed", _DEFAULTS.seed, "The random seed.", flag_values=FLAGS)
flags.DEFINE_string(
  "data_dir",
  None,
  "Where the prepared dataset is, if not where training found it.",
  flag_values=FLAGS,
)
flags.DEFINE_bool("no_images", False, "Write no PNGs.", flag_values=FLAGS)
flags.DEFINE_string("compilation_cache", None, compilation_cache.FLAG_HELP, flag_values=FLAGS)
flags.mark_flags_as_required(["workdir"], flag_values=FLAGS)


def format_table(metrics: Mapping[str, float]) -> str:
  width = max((len(k) for k in metrics), default=10)
  lines = []
  for k in sorted(metrics):
    v = metrics[k]
    lines.append(
      f"{k:<{width}}  {v:.4f}" if isinstance(v, float) and abs(v) < 1e5 else f"{k:<{width}}  {v}"
    )
  return "\n".join(lines)


def options_from_flags(fv: flags.FlagValues = FLAGS) -> Options:
  """The :class:`Options` the parsed flags ask for."""
  return Options(
    transfer=fv.transfer,
    fid_weights=fv.fid_weights,
    num_pairs=fv.num_pairs,
    batch_size=fv.batch_size,
    hopkins_draws=fv.hopkins_draws,
    classifier_steps=fv.classifier_steps,
    seed=fv.seed,
    write_images=not fv.no_images,
    classifier_dir=fv.classifier_dir,
  )


def main(argv: Sequence[str]) -> None:
  """Evaluates what the flags ask (absl's main; no positional arguments). User errors
  propagate to :func:`attrdis.cli.run`, which reports them."""
  del argv
  logging.set_verbosity(logging.INFO)
  t0 = time.time()

  def progress(msg: str) -> None:
    print(f"[evaluate {time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

  compilation_cache.enable(FLAGS.compilation_cache)
  result = evaluate(
    FLAGS.workdir, FLAGS.step, options_from_flags(FLAGS), FLAGS.out, FLAGS.data_dir, progress
  )
  print(format_table(result["metrics"]))
  for note in result["notes"]:
    print(f"note: {note}")
  print(f"wrote {result['settings']['out']}")
  for path in result["settings"]["images"].values():
    print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main, FLAGS)

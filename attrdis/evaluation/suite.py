"""The metrics by name, and what runs them: :func:`evaluate` (the command's work: every
metric that applies, a JSON file) and :func:`periodic_eval` (a cheap list for the training
loop's ``config.eval_every_steps``).

Each metric is a function of a :class:`~attrdis.evaluation.context.Context` returning
{metric name: number} (and writing its PNG, if any, when ``options.write_images``);
:data:`METRICS` names them, :data:`FULL` and :data:`PERIODIC` are the two lists run, and
:func:`run` runs a list on a context, leaving out what does not apply to its dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from attrdis import checkpoints
from attrdis import input_pipeline
from attrdis.evaluation import clustering
from attrdis.evaluation import context as context_lib
from attrdis.evaluation import ground_truth
from attrdis.evaluation import leakage
from attrdis.evaluation import reconstruction
from attrdis.evaluation import synthesis
from attrdis.evaluation.context import Context, EvaluationError, Options

Progress = Callable[[str], None]


def evaluation_networks(ctx: Context) -> dict[str, float]:
  """``eval_classifier/<metric>``: the evaluation networks' own test metrics (accuracy per
  class task, intensity correlation and RMSE, identity accuracy by nearest prototype)."""
  return {f"eval_classifier/{k}": v for k, v in ctx.eval_model().test_metrics.items()}


@dataclasses.dataclass(frozen=True)
class Metric:
  """A metric function, the words of its progress line, and whether it needs the synthetic
  faces' renderer."""

  fn: Callable[[Context], dict[str, float]]
  title: str
  synthetic_only: bool = False


METRICS: dict[str, Metric] = {
  "reconstruction": Metric(reconstruction.reconstruction, "reconstruction"),
  "entropy": Metric(leakage.entropy, "classifier entropy"),
  "hopkins": Metric(clustering.hopkins, "Hopkins statistic"),
  "knn": Metric(leakage.knn, "k-NN leakage"),
  "linear_probes": Metric(leakage.linear_probes, "linear probes"),
  "embeddings": Metric(clustering.embeddings, "code embeddings"),
  "synthesis": Metric(synthesis.synthesis, "expression synthesis"),
  "ground_truth": Metric(ground_truth.ground_truth, "ground truth", synthetic_only=True),
  "intensity": Metric(ground_truth.intensity, "expression intensity", synthetic_only=True),
  "code_sources": Metric(ground_truth.code_sources, "code sources"),
  "eval_classifier": Metric(evaluation_networks, "evaluation networks"),
  "transfer_errors": Metric(
    ground_truth.transfer_errors, "ground-truth errors", synthetic_only=True
  ),
}

# Everything (``transfer_errors`` is the first part of ``ground_truth``).
FULL = (
  "reconstruction",
  "entropy",
  "hopkins",
  "knn",
  "linear_probes",
  "embeddings",
  "synthesis",
  "ground_truth",
  "intensity",
  "code_sources",
  "eval_classifier",
)
# No evaluation networks, no FID, no files: cheap enough to run during training.
PERIODIC = ("reconstruction", "entropy", "hopkins", "transfer_errors")


def applicable(names: Sequence[str], dataset: str) -> list[str]:
  """The metrics of ``names`` that apply to a model of ``dataset``."""
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise EvaluationError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
  return [n for n in names if not METRICS[n].synthetic_only or dataset == context_lib.SYNTHETIC]


def run(ctx: Context, names: Sequence[str] = FULL) -> dict[str, float]:
  """Runs the metrics ``names`` that apply to the context's dataset, in order; returns
  every number they give."""
  t0 = time.time()
  metrics: dict[str, float] = {}
  for name in applicable(names, ctx.dataset):
    ctx.progress(f"{METRICS[name].title} ({time.time() - t0:.0f} s)")
    metrics.update(METRICS[name].fn(ctx))
  return metrics


def settings(ctx: Context) -> dict[str, Any]:
  """The JSON's ``settings``: what was evaluated, on what, how."""
  d = ctx.config.dataset
  return {
    "workdir": os.path.abspath(os.path.expanduser(ctx.workdir)),
    "step": ctx.step,
    "dataset": d.name,
    "builder_config": d.builder_config,
    "data_dir": d.data_dir,
    "attributes": list(ctx.attributes),
    "image_size": int(ctx.config.image_size),
    "loss_weights": {k: float(v) for k, v in ctx.config.loss_weights.items()},
    "num_test_images": len(ctx.test),
    **dataclasses.asdict(ctx.options),
    "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
    "images": dict(ctx.images),
  }


def check_options(options: Options) -> None:
  """EvaluationError (one line, naming the flag) for settings the command refuses."""
  if options.transfer not in context_lib.TRANSFER_MODES:
    raise EvaluationError(
      f"--transfer must be one of {', '.join(context_lib.TRANSFER_MODES)}, got {options.transfer!r}"
    )
  if options.fid_weights and not os.path.isfile(options.fid_weights):
    from attrdis import fid  # pylint: disable=g-import-not-at-top

    raise EvaluationError(fid.missing_weights_message(options.fid_weights))
  for name in ("num_pairs", "batch_size", "hopkins_draws", "classifier_steps"):
    if getattr(options, name) < 1:
      raise EvaluationError(f"--{name} must be at least 1, got {getattr(options, name)}")


def load_trained(
  workdir: str, step: int | None = None, data_dir: str | None = None
) -> checkpoints.Trained:
  """The checkpoint (Orbax's restore logs quietened), its dataset moved to ``data_dir``."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Orbax's restore logs a page of INFO lines
  try:
    trained = checkpoints.load_trained(workdir, step)
  finally:
    logging.set_verbosity(verbosity)
  if data_dir:
    trained.config.dataset.data_dir = data_dir
  return trained


def evaluate(
  workdir: str,
  step: int | None = None,
  options: Options | None = None,
  out: str | None = None,
  data_dir: str | None = None,
  progress: Progress | None = None,
) -> dict[str, Any]:
  """What the command does: every metric of :data:`FULL` that applies; returns (and writes
  to ``out``, default W/eval/<step>.json) ``{"metrics", "settings", "notes"}``."""
  options = options or Options()
  check_options(options)
  if not os.path.isdir(os.path.expanduser(workdir)):
    raise EvaluationError(f"workdir {workdir} does not exist")
  trained = load_trained(workdir, step, data_dir)
  ctx = Context(trained, workdir, options, progress=progress)
  if options.fid_weights:
    from attrdis import fid  # pylint: disable=g-import-not-at-top

    try:
      ctx.inception()
    except fid.FIDError as e:
      raise EvaluationError(str(e)) from None
  t0 = time.time()
  metrics = run(ctx, FULL)
  if not options.fid_weights:
    ctx.notes.append(
      "FID skipped: no --fid_weights given (pytorch-fid's "
      "pt_inception-2015-12-05-6726825d.pth cannot be downloaded here)."
    )
  ctx.progress(f"evaluation done in {time.time() - t0:.0f} s")
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    ctx.notes.append(f"not finite: {', '.join(sorted(bad))}")
  result = {
    "metrics": {k: float(v) for k, v in sorted(metrics.items())},
    "settings": settings(ctx),
    "notes": ctx.notes,
  }
  out = out or os.path.join(ctx.eval_dir(), f"{trained.step}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, allow_nan=True)
  os.replace(tmp, out)
  result["settings"]["out"] = out
  return result


def periodic_eval(
  config: ml_collections.ConfigDict,
  workdir: str,
  models,
  params,
  step: int,
  num_pairs: int = 64,
  batch_size: int = 64,
) -> dict[str, float]:
  """The metrics of :data:`PERIODIC` for ``config.eval_every_steps``, with one Hopkins draw
  and no files: test reconstruction error, the entropy and latent-accuracy matrices, the
  Hopkins statistic per expression cluster and, on synthetic faces, the ground-truth errors
  of single-attribute transfers (``num_pairs`` pairs) beside the two trivial answers.
  ``params`` = {'gen', 'cls', ...}; returns metric name → float."""
  trained = checkpoints.Trained(config=config, models=models, params=params, step=int(step))
  options = Options(num_pairs=num_pairs, batch_size=batch_size, hopkins_draws=1, write_images=False)
  builder = input_pipeline.get_builder(config.dataset)  # already prepared by training
  ctx = Context(trained, workdir, options, progress=lambda s: None, builder=builder)
  return {k: float(v) for k, v in run(ctx, PERIODIC).items()}

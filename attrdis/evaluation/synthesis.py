"""Expression synthesis (Table IV): every neutral test image translated to every expression,
read by the evaluation networks, and the translations' FID and KID against the real test
images.

* ``synthesis/acc/<class>``, ``synthesis/acc_mean``, ``synthesis/acc_std`` — how often the
  separate expression CNN (``attrdis.evaluation.networks``) reads a translation as its target
  expression, per target, and the mean and spread over the targets; the target code is the
  class-mean training code (``options.transfer='mean_code'``, ``sampling.
  load_or_compute_mean_codes``) or that of a test image of the class, another identity's
  where possible (``'reference'``); ``synthesis/num_sources`` the neutral test images.
* ``synthesis/fid`` (only with ``options.fid_weights``), and from the same features
  ``synthesis/kid``, ``synthesis/kid_std`` (KID: the mean and standard deviation over 100
  subsets of min(1000, n) images, ``fid.kid_from_features``).
* ``W/eval/synthesis_<step>.png`` — up to 8 neutral images and their translations.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from attrdis import sampling
from attrdis.evaluation import context as context_lib
from attrdis.evaluation import networks
from attrdis.evaluation import plots

SHOWN = 8  # rows of the PNG


def per_target_accuracy(predicted, num_classes: int) -> np.ndarray:
  """``predicted`` (n, C): the class read from source i translated to class c; returns the
  accuracy per target class (C,)."""
  predicted = np.asarray(predicted)
  if predicted.ndim != 2 or predicted.shape[1] != num_classes:
    raise ValueError(f"predictions must be (n, {num_classes}), got {predicted.shape}")
  return np.mean(predicted == np.arange(num_classes)[None, :], axis=0)


def mean_code_targets(
  ctx: context_lib.Context, k: int, num_sources: int
) -> tuple[list[int], Callable[[int], np.ndarray]]:
  """(the classes with a mean code, class → its class-mean training code, one per source)."""
  means = np.asarray(
    sampling.load_or_compute_mean_codes(
      ctx.workdir, ctx.trained, ctx.builder, k, batch_size=ctx.options.batch_size
    )
  )
  num_classes = len(ctx.class_names("expression"))
  usable = [c for c in range(num_classes) if np.all(np.isfinite(means[c]))]
  return usable, lambda c: np.broadcast_to(means[c], (num_sources,) + means.shape[1:])


def reference_targets(
  ctx: context_lib.Context, k: int, neutral: np.ndarray
) -> tuple[list[int], Callable[[int], np.ndarray]]:
  """(the classes with a test image, class → per source the code of a random test image of
  that class, of another identity where there is one)."""
  labels = ctx.test.labels["expression"]
  num_classes = len(ctx.class_names("expression"))
  rng = np.random.default_rng(ctx.options.seed)
  ident = ctx.test.labels.get("identity")
  refs = np.zeros((len(neutral), num_classes), np.int64)
  for r, i in enumerate(neutral):
    for c in range(num_classes):
      pool = np.flatnonzero(labels == c)
      if not len(pool):
        continue
      if ident is not None and (ident[pool] != ident[i]).any():
        pool = pool[ident[pool] != ident[i]]  # another identity's expression
      refs[r, c] = rng.choice(pool)
  usable = [c for c in range(num_classes) if (labels == c).any()]
  codes = ctx.encode().codes[k]
  return usable, lambda c: codes[refs[:, c]]


def fid_and_kid(ctx: context_lib.Context, translated: np.ndarray) -> dict[str, float]:
  """``synthesis/fid``, ``synthesis/kid``, ``synthesis/kid_std`` of Inception features of
  the translations against those of the real test images."""
  from attrdis import fid  # pylint: disable=g-import-not-at-top

  ctx.progress(f"FID: Inception features of {len(ctx.test)} real test images")
  real = ctx.inception()(networks.to_float(ctx.test.images), value_range=(-1, 1))
  out = {"synthesis/fid": fid.fid_from_features(translated, real)}
  kid = fid.kid_from_features(translated, real, seed=ctx.options.seed)
  return {**out, "synthesis/kid": kid.kid, "synthesis/kid_std": kid.std}


def synthesis(ctx: context_lib.Context) -> dict[str, float]:
  """Table IV, FID and KID, and the synthesis PNG (notes say why when it cannot run)."""
  if "expression" not in ctx.attributes:
    ctx.notes.append("Expression synthesis skipped: the model has no expression attribute.")
    return {}
  names = ctx.class_names("expression")
  if "neutral" not in names:
    ctx.notes.append("Expression synthesis skipped: the dataset has no neutral class.")
    return {}
  k = ctx.attributes.index("expression")
  neutral = np.flatnonzero(ctx.test.labels["expression"] == names.index("neutral"))
  if not len(neutral):
    ctx.notes.append("Expression synthesis skipped: no neutral test image.")
    return {}
  enc = ctx.encode()
  n0 = len(neutral)
  if ctx.options.transfer == "mean_code":
    usable, code_for = mean_code_targets(ctx, k, n0)
  else:
    usable, code_for = reference_targets(ctx, k, neutral)
  ctx.progress(
    f"expression synthesis: {n0} neutral test images x {len(usable)} "
    f"expressions ({ctx.options.transfer})"
  )
  model = ctx.eval_model()
  sources = [c[neutral] for c in enc.codes]
  read = np.full((n0, len(names)), -1, np.int64)
  features, shown = [], []
  rows = min(SHOWN, n0)
  for c in usable:  # one target class at a time: memory stays O(neutral images)
    out = ctx.decode([code_for(c) if s == k else z for s, z in enumerate(sources)])
    read[:, c] = model.classes(out)["expression"]
    if ctx.inception() is not None:
      features.append(ctx.inception()(out, value_range=(-1, 1)))
    shown.append(out[:rows])
    ctx.progress(f"translated {n0} images to {names[c]}")
  acc = per_target_accuracy(np.where(read < 0, -1, read), len(names))
  metrics = {f"synthesis/acc/{names[c]}": float(acc[c]) for c in usable}
  metrics["synthesis/acc_mean"] = float(np.mean(acc[usable]))
  metrics["synthesis/acc_std"] = float(np.std(acc[usable]))
  metrics["synthesis/num_sources"] = float(n0)
  if features:
    metrics.update(fid_and_kid(ctx, np.concatenate(features)))
  if ctx.options.write_images:
    path = ctx.image_path("synthesis")
    plots.write_synthesis_png(path, networks.to_float(ctx.test.images[neutral[:rows]]), shown)
    ctx.images["synthesis"] = path
  return metrics

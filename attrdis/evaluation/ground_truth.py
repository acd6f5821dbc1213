"""Transfers against the truth: on synthetic faces the renderer gives the true transfer of
any attribute set between two test images; on every dataset the evaluation networks read
what a transfer shows (``attrdis.evaluation.networks``).

Synthetic faces, for ``options.num_pairs`` random pairs (source, target) of test images of
different (held-out) identities and each attribute set S (each attribute, then each pair):

* ``gt/<S>/l1``, ``gt/<S>/psnr`` of the transfer against the true rendering, beside
  ``..._source`` / ``..._target`` (the errors of returning the source or the target),
  ``gt/<S>/skill`` (1 − L1 / L1 of the source) and the same on the pixels that should
  change (``skill_changed``, ``l1_changed``, ``l1_changed_source``, ``changed_fraction``);
* ``transfer/<S>/acc/<b>`` — how often the evaluation networks read attribute b of the
  transfer as the target's (b in S) or the source's (b kept), over the pairs whose source
  and target differ in b (identity: nearest test-identity prototype of the regressed
  renderer parameters); ``acc_transferred``, ``acc_kept`` their means; ``truth_...`` the same
  for the true renderings (the readers' ceiling); ``acc_readable/<b>`` and
  ``acc_{transferred,kept}_readable`` over the pairs whose true rendering the readers get
  right; ``of_ceiling/<b>`` = ``acc/<b>`` / ``truth_acc/<b>``;
* ``gt/all/*``, ``transfer/all/*`` — the means over the sets (the minimum for ``_min``);
* ``intensity/corr`` — the correlation between the target's true expression intensity and
  the intensity the regressor reads from the expression transfer (every non-neutral test
  image as target, a random source), ``intensity/corr_truth`` on the true renderings,
  ``intensity/mae``, ``intensity/num_pairs``;
* ``W/eval/transfer_<step>.png`` — per set, three pairs: source, target, transfer, truth.

Every dataset: ``source_of/<a>/<slots>`` — which code attribute a's appearance comes from
(the target supplying z_a, z_a and z_0, or z_0), and ``recon/read/<a>`` beside
``recon/read_real/<a>``: reconstructions and real test images read as their own label.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from attrdis import input_pipeline
from attrdis.evaluation import context as context_lib
from attrdis.evaluation import networks
from attrdis.evaluation import plots
from attrdis.evaluation.context import REST
from attrdis.evaluation.reconstruction import image_errors
from attrdis.synthetic import factors as factors_lib
from attrdis.synthetic import render

CHANGED = 0.1  # a pixel "changes" when a channel of the true transfer leaves the source by more
SHOWN_PAIRS = 3  # pairs per set in the PNG

Reader = Callable[[np.ndarray], dict[str, np.ndarray]]


# ----------------------------------------------------------------------------------------
# Pure helpers (each checked by hand in the tests).


def to_unit(images) -> np.ndarray:
  """[-1, 1] → [0, 1] (float32)."""
  return (np.asarray(images, np.float32) + 1.0) / 2.0


def skill(l1: float, l1_source: float) -> float:
  """1 − L1 / L1 of returning the source: the share of the source's error to the true
  transfer that the transfer removes (1 = exact, 0 = no better than the source, < 0 worse)."""
  return 1.0 - l1 / l1_source if l1_source > 0 else float("nan")


def ground_truth_errors(pred, truth, source, target, name: str) -> dict[str, float]:
  """``gt/<name>/l1``, ``psnr`` of the transfer ``pred`` against the true rendering, the same
  for the two trivial answers (``_source``, ``_target``), and ``gt/<name>/skill``."""
  out = {}
  for label, candidate in (("", pred), ("_source", source), ("_target", target)):
    l1, psnr = image_errors(candidate, truth)
    out[f"gt/{name}/l1{label}"] = float(l1.mean())
    out[f"gt/{name}/psnr{label}"] = float(psnr.mean())
  out[f"gt/{name}/skill"] = skill(out[f"gt/{name}/l1"], out[f"gt/{name}/l1_source"])
  out.update(changed_region_errors(pred, truth, source, name))
  return out


def changed_region_errors(pred, truth, source, name: str) -> dict[str, float]:
  """The errors where the true transfer differs from the source (some channel by more than
  ``CHANGED`` in [0, 1] units), pooled over the images: ``gt/<name>/l1_changed`` (the
  transfer), ``l1_changed_source`` (returning the source), ``skill_changed`` (1 − their
  ratio) and ``changed_fraction`` (the pixels' share). A small change (an expression moves
  ~5 % of the pixels) is swamped in the whole-image L1 by the reconstruction error elsewhere;
  here only the pixels that should move count."""
  pred, truth, source = (to_unit(a) for a in (pred, truth, source))
  mask = np.max(np.abs(truth - source), axis=-1) > CHANGED  # (n, H, W)
  out = {f"gt/{name}/changed_fraction": float(mask.mean())}
  if not mask.any():
    return out
  err = np.mean(np.abs(pred - truth), axis=-1)[mask].mean()
  err_source = np.mean(np.abs(source - truth), axis=-1)[mask].mean()
  out[f"gt/{name}/l1_changed"] = float(err)
  out[f"gt/{name}/l1_changed_source"] = float(err_source)
  out[f"gt/{name}/skill_changed"] = skill(float(err), float(err_source))
  return out


def transfer_accuracy(
  read: Mapping[str, np.ndarray],
  source: Mapping[str, np.ndarray],
  target: Mapping[str, np.ndarray],
  transferred: Sequence[str],
  prefix: str = "",
  truth_read: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
  """How often each read attribute b is the target's (b transferred) or the source's (b
  kept), counted over the pairs whose source and target differ in b (elsewhere both answers
  agree). Returns ``{prefix}acc/<b>`` per b with any such pair, and ``{prefix}acc_transferred``
  / ``{prefix}acc_kept``: the means over the transferred / kept attributes.

  With ``truth_read`` (what the same readers read from the true images) also
  ``{prefix}acc_readable/<b>`` and ``..._transferred_readable`` / ``..._kept_readable``: the
  same over the pairs whose true image is itself read correctly, which discounts the
  readers' own errors."""
  out: dict[str, float] = {}
  groups: dict[str, list[float]] = {}
  for b, pred in read.items():
    differ = np.asarray(source[b]) != np.asarray(target[b])
    if not differ.any():
      continue
    expected = np.asarray(target[b] if b in transferred else source[b])
    right = np.asarray(pred) == expected
    kind = "transferred" if b in transferred else "kept"
    out[f"{prefix}acc/{b}"] = float(np.mean(right[differ]))
    groups.setdefault(kind, []).append(out[f"{prefix}acc/{b}"])
    if truth_read is not None:
      readable = differ & (np.asarray(truth_read[b]) == expected)
      if readable.any():
        out[f"{prefix}acc_readable/{b}"] = float(np.mean(right[readable]))
        groups.setdefault(f"{kind}_readable", []).append(out[f"{prefix}acc_readable/{b}"])
  for kind in ("transferred", "kept", "transferred_readable", "kept_readable"):
    if kind in groups:
      out[f"{prefix}acc_{kind}"] = float(np.mean(groups[kind]))
  return out


def of_ceiling(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
  """{b: ``{prefix}acc/<b>`` / ``{prefix}truth_acc/<b>``}: a transfer's reading of b as a
  share of what the same readers get from the true rendering (their ceiling)."""
  out = {}
  for key, value in metrics.items():
    if key.startswith(prefix + "acc/"):
      b = key[len(prefix + "acc/") :]
      truth = metrics.get(f"{prefix}truth_acc/{b}")
      if truth:
        out[b] = value / truth
  return out


def set_summaries(metrics: Mapping[str, float], sets: Sequence[Sequence[str]]) -> dict[str, float]:
  """``gt/all/<key>`` and ``transfer/all/<key>``: each per-set number of ``metrics`` (the
  errors, the mean accuracies) averaged over the attribute sets, and
  ``transfer/all/of_ceiling_{transferred,kept}_min`` the smallest ceiling ratio."""
  summary: dict[str, list[float]] = {}
  for names in sets:
    name = context_lib.set_name(names)
    for key, value in metrics.items():
      if key.startswith(f"gt/{name}/"):
        summary.setdefault(key.split("/")[-1], []).append(value)
    for tag in ("", "truth_"):
      for key in ("acc_transferred", "acc_kept", "acc_transferred_readable", "acc_kept_readable"):
        if f"transfer/{name}/{tag}{key}" in metrics:
          summary.setdefault(tag + key, []).append(metrics[f"transfer/{name}/{tag}{key}"])
    for key, ratio in metrics.items():
      if key.startswith(f"transfer/{name}/of_ceiling/"):
        kind = "transferred" if key.split("/")[-1] in names else "kept"
        summary.setdefault(f"of_ceiling_{kind}_min", []).append(ratio)
  out = {}
  for key, values in summary.items():
    group = "gt" if key.startswith(("l1", "psnr", "skill", "changed")) else "transfer"
    reduce = np.min if key.endswith("_min") else np.mean
    out[f"{group}/all/{key}"] = float(reduce(values))
  return out


# ----------------------------------------------------------------------------------------
# Pairs and their true transfers.


def factors_of(test: networks.SplitArrays) -> factors_lib.FactorBatch:
  """The renderer's factors of every image of a synthetic-faces split."""
  return factors_lib.FactorBatch(
    identity=test.values["identity_params"].astype(np.float32),
    expression=test.labels["expression"].astype(np.int32),
    intensity=test.values["intensity"].astype(np.float32),
    illumination=test.labels["illumination"].astype(np.int32),
    gaze=test.labels["gaze"].astype(np.int32),
    color=test.labels["color"].astype(np.int32),
  )


@dataclasses.dataclass
class Pairs:
  """Test pairs (source ``src``, target ``tgt``: index arrays), the real test images as
  float, and what renders the true transfers between them."""

  src: np.ndarray
  tgt: np.ndarray
  real: np.ndarray
  factors: factors_lib.FactorBatch
  stored: int  # the size the renderer draws at (the dataset's)
  size: int  # the model's

  def truth(self, names: Sequence[str]) -> np.ndarray:
    """The true renderings of ``names`` transferred from each target to its source, through
    the training pipeline's resize (float, [-1, 1])."""
    truth = render.transfer_ground_truth_batch(
      [self.factors[int(i)] for i in self.src],
      [self.factors[int(j)] for j in self.tgt],
      names,
      self.stored,
    )
    return np.stack([input_pipeline.to_model_image(t, self.size) for t in truth])


def pairs_of(ctx: context_lib.Context, src, tgt) -> Pairs:
  """:class:`Pairs` of the test images ``src[i]``, ``tgt[i]``."""
  return Pairs(
    np.asarray(src),
    np.asarray(tgt),
    networks.to_float(ctx.test.images),
    factors_of(ctx.test),
    ctx.stored_image_size,
    int(ctx.config.image_size),
  )


def random_pairs(ctx: context_lib.Context, seed: int) -> Pairs:
  """``options.num_pairs`` random test pairs of different identities (seeded)."""
  return pairs_of(
    ctx, *context_lib.choose_pairs(ctx.test.labels["identity"], ctx.options.num_pairs, seed)
  )


def transfer(ctx: context_lib.Context, src, tgt, take: Sequence[int]) -> np.ndarray:
  """Each source decoded with the code slots ``take`` of its target."""
  return ctx.decode(context_lib.swap_codes(ctx.encode().codes, src, tgt, take))


def readings(
  read: Reader,
  labels: Mapping[str, np.ndarray],
  names: Sequence[str],
  pairs: Pairs,
  pred: np.ndarray,
  truth: np.ndarray,
) -> dict[str, float]:
  """``transfer/<S>/...``: the transfers and the true renderings of one attribute set S as
  the evaluation networks read them, and the ceiling ratios."""
  prefix = f"transfer/{context_lib.set_name(names)}/"
  truth_read = read(truth)
  source = {b: labels[b][pairs.src] for b in truth_read}
  target = {b: labels[b][pairs.tgt] for b in truth_read}
  out = transfer_accuracy(read(pred), source, target, names, prefix, truth_read=truth_read)
  out.update(transfer_accuracy(truth_read, source, target, names, prefix + "truth_"))
  out.update({f"{prefix}of_ceiling/{b}": r for b, r in of_ceiling(out, prefix).items()})
  return out


def set_metrics(
  ctx: context_lib.Context, pairs: Pairs, names: Sequence[str], read: Reader | None = None
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
  """One attribute set: ``gt/<S>/*`` and, with a reader, ``transfer/<S>/*``; also returns
  the transfers and the true renderings."""
  name = context_lib.set_name(names)
  pred = transfer(ctx, pairs.src, pairs.tgt, [ctx.attributes.index(a) for a in names])
  truth = pairs.truth(names)
  out = ground_truth_errors(pred, truth, pairs.real[pairs.src], pairs.real[pairs.tgt], name)
  if read is not None:
    out.update(readings(read, ctx.test.labels, names, pairs, pred, truth))
  ctx.progress(f"ground truth: {name} done ({len(pairs.src)} pairs)")
  return out, pred, truth


# ----------------------------------------------------------------------------------------
# The metrics.


def transfer_errors(ctx: context_lib.Context) -> dict[str, float]:
  """The cheap part: ``gt/<a>/*`` of each single-attribute transfer (no readers)."""
  pairs = random_pairs(ctx, ctx.options.seed)
  out = {}
  for a in ctx.attributes:
    out.update(set_metrics(ctx, pairs, (a,))[0])
  return out


def ground_truth(ctx: context_lib.Context) -> dict[str, float]:
  """Every attribute set against its true rendering, read by the evaluation networks; the
  summaries over the sets; the transfer PNG."""
  pairs = random_pairs(ctx, ctx.options.seed)
  read = ctx.reader()
  sets = context_lib.attribute_sets(ctx.attributes)
  out, rows = {}, []
  r = min(SHOWN_PAIRS, len(pairs.src))
  for names in sets:
    metrics, pred, truth = set_metrics(ctx, pairs, names, read)
    out.update(metrics)
    rows.append(
      plots.transfer_row(pairs.real[pairs.src[:r]], pairs.real[pairs.tgt[:r]], pred[:r], truth[:r])
    )
  out.update(set_summaries(out, sets))
  if ctx.options.write_images and rows:
    path = ctx.image_path("transfer")
    plots.write_transfer_png(path, rows)
    ctx.images["transfer"] = path
  return out


def intensity(ctx: context_lib.Context) -> dict[str, float]:
  """Intensity preservation: every non-neutral test image the target of an expression
  transfer from a random test image of another identity; the regressor reads the intensity
  of the transfer and of the true rendering."""
  if "expression" not in ctx.attributes:
    return {}
  model = ctx.eval_model()
  if model.task("intensity") is None:
    return {}
  ident = ctx.test.labels["identity"]
  tgt = np.flatnonzero(ctx.test.labels["expression"] != 0)
  if len(tgt) < 3:
    return {}
  rng = np.random.default_rng(ctx.options.seed + 1)
  src = np.asarray([rng.choice(np.flatnonzero(ident != ident[j])) for j in tgt])
  pred = transfer(ctx, src, tgt, [ctx.attributes.index("expression")])
  truth = pairs_of(ctx, src, tgt).truth(("expression",))
  true_intensity = ctx.test.values["intensity"][tgt]
  read_pred = model.predict(pred)["intensity"][:, 0]
  read_truth = model.predict(truth)["intensity"][:, 0]
  return {
    "intensity/corr": networks.pearson(true_intensity, read_pred),
    "intensity/corr_truth": networks.pearson(true_intensity, read_truth),
    "intensity/mae": float(np.mean(np.abs(read_pred - true_intensity))),
    "intensity/num_pairs": float(len(tgt)),
  }


def code_sources(ctx: context_lib.Context) -> dict[str, float]:
  """Which code an attribute's appearance comes from. For each attribute a the evaluation
  networks read, random pairs (source, target) of different identities are decoded with
  the target supplying z_a only, z_a and z_0, or z_0 only (the source the rest), and
  ``source_of/<a>/<slots>`` counts how often a is read as the target's (over the pairs
  whose labels of a differ). ``recon/read/<a>``: reconstructions read as their own label,
  beside ``recon/read_real/<a>`` on the real images (the readers' ceiling)."""
  read = ctx.reader()
  labels = ctx.test.labels
  read_rec, read_real = read(ctx.encode().recon), read(ctx.test.images)
  readable = [a for a in ctx.attributes if a in read_rec]
  out = {}
  for a in readable:
    out[f"recon/read/{a}"] = float(np.mean(read_rec[a] == labels[a]))
    out[f"recon/read_real/{a}"] = float(np.mean(read_real[a] == labels[a]))
  src, tgt = context_lib.choose_pairs(
    labels["identity"], ctx.options.num_pairs, ctx.options.seed + 2
  )
  rest = len(ctx.attributes)
  for a in readable:
    differ = labels[a][src] != labels[a][tgt]
    if not differ.any():
      continue
    k = ctx.attributes.index(a)
    for slots, take in ((f"z_{a}", [k]), (f"z_{a}+z_{REST}", [k, rest]), (f"z_{REST}", [rest])):
      got = read(transfer(ctx, src, tgt, take))[a]
      out[f"source_of/{a}/{slots}"] = float(np.mean((got == labels[a][tgt])[differ]))
  return out

"""The evaluator (docs/design.md §4, the paper's §IV): every metric that applies.

    python -m attrdis.evaluate --workdir=W [--step=N] [--fid_weights=FILE] [--out=FILE]
        [--transfer=mean_code|reference] [--num_pairs=256] [--batch_size=64]
        [--classifier_steps=3000] [--seed=0] [--data_dir=DIR]

restores the checkpoint, runs the metrics below on the test split, prints a table and writes
``W/eval/<step>.json``: ``{"metrics": {name: number}, "settings": {...}, "notes": [...]}``
(plus ``W/eval/entropy_<step>.png``, ``W/eval/embeddings_<step>.png`` and sample grids).

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
  by a separate simple CNN (``attrdis.eval_classifier``, trained once on the real training
  split and kept in ``W/eval_classifiers``; its own test accuracy is ``eval_classifier/*``);
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

Library: :class:`Evaluator` (``run()`` → metrics), :func:`evaluate` (what the command does)
and :func:`periodic_eval` (a cheap subset for the training loop's ``eval_every_steps``), plus
the metric helpers the tests check by hand.
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import functools
import itertools
import json
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image, ImageDraw, ImageFont

from attrdis import checkpoints
from attrdis import cluster_metrics
from attrdis import compilation_cache
from attrdis import errors
from attrdis import eval_classifier as ec
from attrdis import images as images_lib
from attrdis import input_pipeline
from attrdis.configuration import ConfigError

REST = "rest"
TRANSFER_MODES = ("mean_code", "reference")
SYNTHETIC = "synthetic_faces"


class EvaluationError(ValueError):
  """A bad request or input; the command prints it as one line."""


@dataclasses.dataclass
class Options:
  """The evaluator's settings (the command's flags)."""
  transfer: str = "mean_code"
  fid_weights: str | None = None
  num_pairs: int = 256
  batch_size: int = 64
  hopkins_draws: int = 10
  hopkins_fraction: float = 0.1
  classifier_steps: int = 3000
  classifier_batch_size: int = 32
  classifier_dir: str | None = None  # default: W/eval_classifiers
  seed: int = 0
  write_images: bool = True
  fid_batch_size: int = 50


# ----------------------------------------------------------------------------------------
# Metric helpers (pure; each checked against a hand computation in the tests).

def to_unit(images) -> np.ndarray:
  """[-1, 1] → [0, 1] (float32)."""
  return (np.asarray(images, np.float32) + 1.0) / 2.0


@jax.jit
def _image_errors(a, b):
  d = (a.astype(jnp.float32) - b.astype(jnp.float32)) / 2.0  # [0, 1] pixel units
  axes = tuple(range(1, d.ndim))
  l1 = jnp.mean(jnp.abs(d), axis=axes)
  mse = jnp.mean(d * d, axis=axes)
  psnr = 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))
  return l1, psnr


def image_errors(pred, truth) -> tuple[np.ndarray, np.ndarray]:
  """Per image: L1 (mean |Δ| in [0, 1] pixel units) and PSNR (dB, peak 1; capped at 100 dB
  for identical images) of images in [-1, 1] (n, H, W, C)."""
  pred, truth = np.asarray(pred, np.float32), np.asarray(truth, np.float32)
  if pred.shape != truth.shape:
    raise ValueError(f"shapes differ: {pred.shape} vs {truth.shape}")
  l1, psnr = _image_errors(jnp.asarray(pred), jnp.asarray(truth))
  return np.asarray(l1, np.float64), np.asarray(psnr, np.float64)


def hopkins_per_class(codes, labels, num_classes: int, draws: int = 10, seed: int = 0,
                      sample_fraction: float = 0.1):
  """Hopkins statistic of the (flattened) codes of each class: (mean (C,), std (C,)) over
  ``draws`` random draws (keys seed, seed+1, ...); NaN for classes with < 2 points."""
  codes = np.asarray(codes, np.float32).reshape(len(codes), -1)
  labels = np.asarray(labels)
  mean, std = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
  for c in range(num_classes):
    x = codes[labels == c]
    if len(x) < 2:
      continue
    hs = [cluster_metrics.hopkins_statistic(x, key=seed + r, sample_fraction=sample_fraction)
          for r in range(draws)]
    mean[c], std[c] = float(np.mean(hs)), float(np.std(hs))
  return mean, std


@jax.jit
def _pca_2d(x):
  x = x.reshape(x.shape[0], -1).astype(jnp.float32)
  xc = x - jnp.mean(x, axis=0)
  _, _, vt = jnp.linalg.svd(xc, full_matrices=False)
  v = vt[:2]
  # Deterministic signs: each axis' largest-magnitude loading is positive.
  sign = jnp.sign(v[jnp.arange(v.shape[0]), jnp.argmax(jnp.abs(v), axis=1)])
  v = v * jnp.where(sign == 0, 1.0, sign)[:, None]
  return jnp.matmul(xc, v.T, precision=jax.lax.Precision.HIGHEST)


def pca_2d(x) -> np.ndarray:
  """The first two principal-component scores of the rows of x (n, ...) → (n, 2)."""
  x = np.asarray(x, np.float32)
  if x.shape[0] < 2:
    raise ValueError("PCA needs at least 2 points")
  out = np.asarray(_pca_2d(jnp.asarray(x)))
  if out.shape[1] < 2:  # a single feature: pad the second axis
    out = np.concatenate([out, np.zeros((len(out), 2 - out.shape[1]), out.dtype)], axis=1)
  return out


def knn_neighbours(x, k: int = 5) -> np.ndarray:
  """Indices (n, k) of each row's k nearest other rows of x (n, ...), nearest first."""
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  k = min(k, len(x) - 1)
  if k < 1:
    raise ValueError("k-NN needs at least 2 points")
  return np.asarray(_knn_indices(jnp.asarray(x), k))


def knn_vote_accuracy(neighbours, labels) -> float:
  """Leave-one-out k-NN accuracy: each point's label predicted by the majority of its
  neighbours' labels (a tie goes to the class of the nearest tied neighbour)."""
  labels = np.asarray(labels)
  votes = labels[np.asarray(neighbours)]
  correct = 0
  for i in range(len(labels)):
    values, counts = np.unique(votes[i], return_counts=True)
    best = set(values[counts == counts.max()].tolist())
    pred = next(v for v in votes[i].tolist() if v in best)
    correct += int(pred == labels[i])
  return correct / len(labels)


def knn_accuracy(x, labels, k: int = 5) -> float:
  """Leave-one-out k-nearest-neighbour accuracy (Euclidean) of predicting ``labels`` from
  the rows of x: how much of the labelled attribute a code carries, independent of any
  trained classifier."""
  return knn_vote_accuracy(knn_neighbours(x, k), labels)


@functools.partial(jax.jit, static_argnames=("k",))
def _knn_indices(x, k):
  xc = x - jnp.mean(x, axis=0)
  sq = jnp.sum(xc * xc, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(xc, xc.T, precision=jax.lax.Precision.HIGHEST)
  d2 = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, d2)
  return jax.lax.top_k(-d2, k)[1]


# t-SNE (exact, O(n²): fine for the ~1000 points of a test split).

def _pairwise_sq(x):
  sq = jnp.sum(x * x, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(d2, 0.0)


@functools.partial(jax.jit, static_argnames=("iterations",))
def tsne_conditional_p(d2, perplexity, iterations: int = 100):
  """Rows P_{j|i} ∝ exp(−β_i d²_ij) (P_{i|i} = 0) with β_i found by bisection (in log β)
  so that each row's entropy is log(perplexity) nats. d2: (n, n) squared distances."""
  n = d2.shape[0]
  mask = ~jnp.eye(n, dtype=bool)
  scale = jnp.sum(jnp.where(mask, d2, 0.0), axis=1) / (n - 1) + 1e-12  # row mean
  d = d2 / scale[:, None]
  target = jnp.log(perplexity)

  def rows(log_beta):
    logits = jnp.where(mask, -jnp.exp(log_beta)[:, None] * d, -jnp.inf)
    logp = jax.nn.log_softmax(logits, axis=1)
    p = jnp.exp(logp)
    h = -jnp.sum(jnp.where(mask, p * logp, 0.0), axis=1)
    return p, h

  def body(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    _, h = rows(mid)
    too_flat = h > target  # entropy too high: sharpen (larger beta)
    return jnp.where(too_flat, mid, lo), jnp.where(too_flat, hi, mid)

  lo, hi = jnp.full((n,), -20.0), jnp.full((n,), 20.0)
  lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
  return rows((lo + hi) / 2)


def tsne_kl(y, p):
  """KL(P || Q) of an embedding y (n, 2) under t-SNE's Student-t Q (P joint, symmetric)."""
  n = y.shape[0]
  mask = ~jnp.eye(n, dtype=bool)
  num = jnp.where(mask, 1.0 / (1.0 + _pairwise_sq(y)), 0.0)
  q = num / jnp.sum(num)
  return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, 1e-30))
                                       - jnp.log(jnp.maximum(q, 1e-30))), 0.0))


def tsne_gradient(y, p):
  """The closed-form gradient of :func:`tsne_kl`: 4 Σ_j (p_ij − q_ij)(y_i − y_j)/(1 + d²_ij)."""
  n = y.shape[0]
  mask = ~jnp.eye(n, dtype=bool)
  num = jnp.where(mask, 1.0 / (1.0 + _pairwise_sq(y)), 0.0)
  q = num / jnp.sum(num)
  w = (p - q) * num
  return 4.0 * (jnp.sum(w, axis=1)[:, None] * y - jnp.matmul(w, y,
                                                             precision=jax.lax.Precision.HIGHEST))


@functools.partial(jax.jit, static_argnames=("steps", "exaggeration_steps"))
def _tsne_run(p, y0, steps, exaggeration_steps, learning_rate):
  def step(carry, t):
    y, v, gains = carry
    exaggerate = jnp.where(t < exaggeration_steps, 12.0, 1.0)
    momentum = jnp.where(t < exaggeration_steps, 0.5, 0.8)
    g = tsne_gradient(y, p * exaggerate)
    # van der Maaten's adaptive gains: grow where the step keeps its direction.
    gains = jnp.where(jnp.sign(g) != jnp.sign(v), gains + 0.2, gains * 0.8)
    gains = jnp.maximum(gains, 0.01)
    v = momentum * v - learning_rate * gains * g
    y = y + v
    return (y - jnp.mean(y, axis=0), v, gains), None
  (y, _, _), _ = jax.lax.scan(step, (y0, jnp.zeros_like(y0), jnp.ones_like(y0)),
                              jnp.arange(steps))
  return y


def tsne_2d(x, perplexity: float = 30.0, steps: int = 750, seed: int = 0) -> np.ndarray:
  """A 2-D t-SNE embedding of the rows of x (n, ...) (exact gradients, early exaggeration
  12 for the first 250 steps, momentum 0.5 → 0.8, adaptive gains; initialised from the PCA
  scores scaled to std 1e-4). Deterministic."""
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  n = len(x)
  if n < 3:
    raise ValueError("t-SNE needs at least 3 points")
  perplexity = float(min(perplexity, (n - 1) / 3.0))
  xc = jnp.asarray(x - x.mean(axis=0))
  cond, _ = tsne_conditional_p(_pairwise_sq(xc), perplexity)
  p = (cond + cond.T) / (2.0 * n)
  y0 = pca_2d(x)
  y0 = y0 / max(float(y0.std()), 1e-12) * 1e-4
  del seed  # the PCA start is deterministic; kept for the signature
  y = _tsne_run(p, jnp.asarray(y0, jnp.float32), int(steps), min(250, int(steps) // 3),
                max(n / 12.0, 50.0))
  return np.asarray(y)


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


CHANGED = 0.1  # a pixel "changes" when a channel of the true transfer leaves the source by more


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


def choose_pairs(identity, num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``num`` random (source, target) index pairs with different identities (seeded)."""
  identity = np.asarray(identity)
  if len(np.unique(identity)) < 2:
    raise EvaluationError("pairs of different identities need at least two test identities")
  rng = np.random.default_rng(seed)
  src, tgt = [], []
  while len(src) < num:
    i, j = rng.integers(0, len(identity), size=2)
    if identity[i] != identity[j]:
      src.append(i)
      tgt.append(j)
  return np.asarray(src, np.int64), np.asarray(tgt, np.int64)


def attribute_sets(attributes: Sequence[str]) -> list[tuple[str, ...]]:
  """Each attribute alone, then each pair of attributes."""
  return [(a,) for a in attributes] + list(itertools.combinations(attributes, 2))


def set_name(names: Sequence[str]) -> str:
  return "+".join(names)


def transfer_accuracy(read: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray],
                      target: Mapping[str, np.ndarray], transferred: Sequence[str],
                      prefix: str = "", truth_read: Mapping[str, np.ndarray] | None = None,
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
      b = key[len(prefix + "acc/"):]
      truth = metrics.get(f"{prefix}truth_acc/{b}")
      if truth:
        out[b] = value / truth
  return out


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_softmax(x, y, num_classes: int, steps: int, l2, learning_rate, key):
  w = 0.01 * jax.random.normal(key, (x.shape[1], num_classes), jnp.float32)
  b = jnp.zeros((num_classes,), jnp.float32)
  tx = optax.adam(learning_rate)

  def loss(params):
    w, b = params
    logits = jnp.matmul(x, w, precision=jax.lax.Precision.HIGHEST) + b
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return ce + l2 * jnp.sum(w * w)

  def step(carry, _):
    params, opt = carry
    g = jax.grad(loss)(params)
    updates, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, updates), opt), None
  params = (w, b)
  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return params


def fit_linear_probe(x_train, y_train, num_classes: int, steps: int = 300, l2: float = 1e-4,
                     learning_rate: float = 0.01, seed: int = 0):
  """A linear softmax classifier of the flattened rows of ``x_train`` (standardised with the
  training mean and std), fitted full-batch with Adam and an L2 penalty; returns
  ``predict(x) -> classes``."""
  x = np.asarray(x_train, np.float32).reshape(len(x_train), -1)
  mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
  w, b = _fit_softmax(jnp.asarray((x - mean) / std), jnp.asarray(y_train, jnp.int32),
                      int(num_classes), int(steps), l2, learning_rate, jax.random.key(seed))

  def predict(x_new) -> np.ndarray:
    xn = (np.asarray(x_new, np.float32).reshape(len(x_new), -1) - mean) / std
    return np.asarray(jnp.argmax(jnp.matmul(jnp.asarray(xn), w) + b, axis=-1))
  return predict


def per_target_accuracy(predicted, num_classes: int) -> np.ndarray:
  """``predicted`` (n, C): the class read from source i translated to class c; returns the
  accuracy per target class (C,)."""
  predicted = np.asarray(predicted)
  if predicted.ndim != 2 or predicted.shape[1] != num_classes:
    raise ValueError(f"predictions must be (n, {num_classes}), got {predicted.shape}")
  return np.mean(predicted == np.arange(num_classes)[None, :], axis=0)


# ----------------------------------------------------------------------------------------
# Jitted model kernels (the modules are static: equal configs share compilations).

@functools.partial(jax.jit, static_argnames=("gen", "cls"))
def _encode_and_read(gen, cls, gen_params, cls_params, x, labels):
  """Codes, reconstructions, and every classifier on every code: per image the entropy
  (n, M, M+1) of C_m(z_k) and whether its argmax is the image's m label."""
  codes = gen.apply({"params": gen_params}, x, method="encode")
  rec = gen.apply({"params": gen_params}, codes, method="decode")
  ent, correct = [], []
  for z in codes:
    logits = cls.apply({"params": cls_params}, z, method="latent")
    e_k, c_k = [], []
    for m, l in enumerate(logits):
      logp = jax.nn.log_softmax(l.astype(jnp.float32), axis=-1)
      e_k.append(-jnp.sum(jnp.exp(logp) * logp, axis=-1))
      c_k.append((jnp.argmax(l, axis=-1) == labels[:, m]).astype(jnp.float32))
    ent.append(jnp.stack(e_k, axis=1))
    correct.append(jnp.stack(c_k, axis=1))
  return codes, rec, jnp.stack(ent, axis=2), jnp.stack(correct, axis=2)


@functools.partial(jax.jit, static_argnames=("gen",))
def _decode(gen, gen_params, codes):
  return gen.apply({"params": gen_params}, list(codes), method="decode")


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  if len(x) == size:
    return x
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)])


@dataclasses.dataclass
class Encoded:
  """The test split through the model: codes [z_1..z_M, z_0] as numpy (n, h, w, c), the
  reconstructions, and per image the entropy / correctness of C_m on z_k (n, M, M+1)."""
  codes: list[np.ndarray]
  recon: np.ndarray
  entropy: np.ndarray
  correct: np.ndarray


def encode_split(models, params, images, labels, batch_size: int,
                 progress: Callable[[str], None] | None = None) -> Encoded:
  """Runs :func:`_encode_and_read` over ``images`` (float [-1, 1] or uint8) in padded
  batches of ``batch_size``; ``labels`` (n, M) the model's attribute labels."""
  images = np.asarray(images)
  labels = np.asarray(labels, np.int32)
  n = len(images)
  parts: list[Any] = []
  for start in range(0, n, batch_size):
    x = images[start:start + batch_size]
    x = ec.to_float(x) if x.dtype == np.uint8 else np.asarray(x, np.float32)
    y = labels[start:start + batch_size]
    out = _encode_and_read(models.gen, models.cls, params["gen"], params["cls"],
                           jnp.asarray(_pad(x, batch_size)), jnp.asarray(_pad(y, batch_size)))
    k = len(x)
    parts.append(jax.tree.map(lambda a, k=k: np.asarray(a)[:k], out))
    if progress and n > batch_size:
      progress(f"encoded {min(start + batch_size, n)}/{n} test images")
  codes = [np.concatenate([p[0][s] for p in parts]) for s in range(len(parts[0][0]))]
  return Encoded(codes=codes, recon=np.concatenate([p[1] for p in parts]),
                 entropy=np.concatenate([p[2] for p in parts]),
                 correct=np.concatenate([p[3] for p in parts]))


def decode_codes(models, gen_params, codes: Sequence[np.ndarray], batch_size: int,
                 progress: Callable[[str], None] | None = None, what: str = "") -> np.ndarray:
  """Images (n, S, S, 3) in [-1, 1] of codes given per slot as (n, h, w, c)."""
  n = len(codes[0])
  out = []
  for start in range(0, n, batch_size):
    chunk = [jnp.asarray(_pad(np.asarray(z[start:start + batch_size]), batch_size))
             for z in codes]
    out.append(np.asarray(_decode(models.gen, gen_params, chunk))[:min(batch_size, n - start)])
    if progress and n > batch_size and ((start // batch_size) % 10 == 9 or start + batch_size >= n):
      progress(f"{what or 'decoded'} {min(start + batch_size, n)}/{n} images")
  return np.concatenate(out)


def swap_codes(codes: Sequence[np.ndarray], source_idx, target_idx,
               take: Sequence[int]) -> list[np.ndarray]:
  """Codes of each source with the slots in ``take`` from its target (index arrays)."""
  return [c[target_idx] if k in take else c[source_idx] for k, c in enumerate(codes)]


# ----------------------------------------------------------------------------------------
# Pictures (PIL only).

_TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
  """Distinct colours: tab10 up to 10 classes, else evenly spaced hues."""
  if num_classes <= len(_TAB10):
    return _TAB10[:num_classes]
  return [tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(i / num_classes, 0.8, 0.85))
          for i in range(num_classes)]


def panel_positions(xy, size: int, margin: int = 6) -> np.ndarray:
  """Pixel positions (n, 2) of 2-D points scaled into a size×size panel (aspect kept)."""
  xy = np.asarray(xy, np.float64)
  lo, hi = xy.min(axis=0), xy.max(axis=0)
  span = max(float((hi - lo).max()), 1e-12)
  centre = (lo + hi) / 2
  usable = size - 2 * margin - 1
  p = (xy - centre) / span * usable + size / 2
  p[:, 1] = size - 1 - p[:, 1]  # y up
  return np.clip(np.round(p), 0, size - 1).astype(np.int64)


def scatter_panel(xy, labels, colours, size: int = 180, radius: int = 2) -> Image.Image:
  """A white panel with one dot per point in its class colour (drawn in a random but fixed
  order, so no class hides the others)."""
  img = Image.new("RGB", (size, size), "white")
  draw = ImageDraw.Draw(img)
  pos = panel_positions(xy, size)
  order = np.random.default_rng(0).permutation(len(pos))
  for i in order:
    x, y = pos[i]
    draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                 fill=colours[int(labels[i]) % len(colours)])
  draw.rectangle((0, 0, size - 1, size - 1), outline=(160, 160, 160))
  return img


def _font(size: int = 12):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:
    return ImageFont.load_default()


def write_embedding_png(path: str, embeddings: Mapping[str, np.ndarray],
                        labels: Mapping[str, np.ndarray],
                        class_names: Mapping[str, Sequence[str]], panel: int = 180,
                        title: str = "") -> tuple[int, int]:
  """A grid of 2-D embeddings: one row per embedding (``embeddings`` row label → (n, 2)),
  one column per labelling (``labels`` name → (n,)), dots coloured by class (the classes present, in
  order), a legend under each column (the first 12 classes). Returns the image size."""
  font = _font(12)
  rows, cols = list(embeddings), list(labels)
  present = {c: np.unique(np.asarray(labels[c])) for c in cols}
  rank = {c: np.searchsorted(present[c], np.asarray(labels[c])) for c in cols}
  colours = {c: class_colours(len(present[c])) for c in cols}
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  pad, head = 8, 22
  left = 2 * pad + max((probe.textbbox((0, 0), str(r), font=font)[2] for r in rows), default=0)
  legend_lines = max((min(len(present[c]), 13) for c in cols), default=0)
  top = pad + (18 if title else 0) + head
  width = left + len(cols) * (panel + pad) + pad
  height = top + len(rows) * (panel + pad) + 14 * legend_lines + 2 * pad
  img = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(img)
  if title:
    draw.text((pad, pad), title, fill="black", font=font)
  for j, c in enumerate(cols):
    draw.text((left + j * (panel + pad), top - head + 4), f"coloured by {c}", fill="black",
              font=font)
  for i, r in enumerate(rows):
    y0 = top + i * (panel + pad)
    draw.text((pad, y0 + panel // 2 - 6), str(r), fill="black", font=font)
    for j, c in enumerate(cols):
      img.paste(scatter_panel(embeddings[r], rank[c], colours[c], panel),
                (left + j * (panel + pad), y0))
  y_leg = top + len(rows) * (panel + pad)
  for j, c in enumerate(cols):
    names = [class_names[c][int(q)] for q in present[c]]
    for q, name in enumerate(names[:12]):
      x, y = left + j * (panel + pad), y_leg + 14 * q
      draw.rectangle((x, y + 2, x + 9, y + 11), fill=colours[c][q])
      draw.text((x + 14, y), name, fill="black", font=font)
    if len(names) > 12:
      draw.text((left + j * (panel + pad) + 14, y_leg + 14 * 12),
                f"... {len(names)} classes", fill="black", font=font)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return img.size


# ----------------------------------------------------------------------------------------
# Test data of the model's dataset (cached per dataset for periodic evaluation).

_SPLIT_CACHE: dict[tuple, ec.SplitArrays] = {}


def _dataset_key(config, split: str) -> tuple:
  d = config.dataset
  return (d.name, d.builder_config, d.data_dir, int(config.image_size), split)


def load_split(config, builder, split: str, progress=None) -> ec.SplitArrays:
  key = _dataset_key(config, split)
  if key not in _SPLIT_CACHE:
    _SPLIT_CACHE[key] = ec.read_split(builder, split, int(config.image_size), progress)
  return _SPLIT_CACHE[key]


def open_dataset(config):
  """(builder, info) of the model's dataset, prepared if needed; EvaluationError if not."""
  try:
    return input_pipeline.load(config)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise EvaluationError(f"cannot open dataset {config.dataset.name} (data_dir "
                          f"{config.dataset.data_dir or 'default'}): {first}") from None


# ----------------------------------------------------------------------------------------
# The evaluator.

class Evaluator:
  """Every metric of the module docstring for one trained model."""

  def __init__(self, trained: checkpoints.Trained, workdir: str, options: Options | None = None,
               progress: Callable[[str], None] | None = None, builder=None, info=None):
    self.trained = trained
    self.config = trained.config
    self.models = trained.models
    self.params = trained.params
    self.workdir = workdir
    self.options = options or Options()
    self.progress = progress or (lambda s: logging.info("%s", s))
    self.attributes = tuple(self.config.dataset.attributes)
    self.code_names = self.attributes + (REST,)
    if builder is None:
      builder, info = open_dataset(self.config)
    self.builder, self.info = builder, info
    self.dataset = self.config.dataset.name
    self.test = load_split(self.config, builder, "test", self.progress)
    missing = [a for a in self.attributes if a not in self.test.labels]
    if missing:
      raise EvaluationError(f"the test split does not label {', '.join(missing)}")
    self.labels = np.stack([self.test.labels[a] for a in self.attributes], axis=1)
    self.notes: list[str] = []
    self.metrics: dict[str, float] = {}
    self.encoded: Encoded | None = None
    self._eval_model: ec.EvalModel | None = None
    self._inception = None
    self._reader = None
    self.images_written: dict[str, str] = {}

  # -- helpers

  @property
  def num_classes(self) -> tuple[int, ...]:
    return tuple(self.models.num_classes)

  def class_names(self, attribute: str) -> tuple[str, ...]:
    return self.test.class_names[attribute]

  def _eval_dir(self) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(self.workdir)), "eval")

  def _image_path(self, kind: str) -> str:
    return os.path.join(self._eval_dir(), f"{kind}_{self.trained.step}.png")

  def encode(self) -> Encoded:
    if self.encoded is None:
      self.progress(f"encoding {len(self.test)} test images")
      self.encoded = encode_split(self.models, self.params, self.test.images, self.labels,
                                  self.options.batch_size, self.progress)
    return self.encoded

  def eval_model(self) -> ec.EvalModel:
    """The evaluation classifiers (trained on first use and saved in the workdir, or in
    ``--classifier_dir``; then read from there)."""
    if self._eval_model is None:
      tasks = ec.default_tasks(self.dataset, self.test, self.attributes)
      o = self.options
      self._eval_model = ec.load_or_train(
          o.classifier_dir or ec.directory(self.workdir), self.dataset,
          self.config.dataset.builder_config, int(self.config.image_size), tasks,
          lambda: load_split(self.config, self.builder, "train", self.progress), self.test,
          steps=o.classifier_steps, batch_size=o.classifier_batch_size, seed=o.seed,
          progress=self.progress)
      for k, v in self._eval_model.test_metrics.items():
        self.metrics[f"eval_classifier/{k}"] = v
    return self._eval_model

  def inception(self):
    if self._inception is None and self.options.fid_weights:
      from attrdis import fid  # pylint: disable=g-import-not-at-top
      self._inception = fid.InceptionFeatureExtractor.from_weights(
          self.options.fid_weights, batch_size=self.options.fid_batch_size)
    return self._inception

  # -- the metrics

  def reconstruction(self) -> None:
    enc = self.encode()
    l1, psnr = image_errors(enc.recon, ec.to_float(self.test.images))
    self.metrics["recon/l1"] = float(l1.mean())
    self.metrics["recon/psnr"] = float(psnr.mean())

  def entropy(self) -> np.ndarray:
    """Fig. 5: the (M, M+1) matrix of mean entropies; also latent accuracies and the PNG."""
    enc = self.encode()
    ent = enc.entropy.mean(axis=0)  # (M, M+1)
    acc = enc.correct.mean(axis=0)
    off = []
    for m, a in enumerate(self.attributes):
      for k, z in enumerate(self.code_names):
        self.metrics[f"entropy/C_{a}/z_{z}"] = float(ent[m, k])
        if a != "identity":  # the test identities are held out: C_identity cannot name them
          self.metrics[f"latent_acc/C_{a}/z_{z}"] = float(acc[m, k])
        if k != m:
          off.append(ent[m, k] / math.log(self.num_classes[m]))
    self.metrics["entropy/off_diagonal_normalized"] = float(np.mean(off))
    self.metrics["entropy/diagonal_mean"] = float(np.mean([ent[m, m] for m in
                                                           range(len(self.attributes))]))
    if self.options.write_images:
      path = self._image_path("entropy")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      cluster_metrics.write_heatmap_png(
          path, ent, [f"C_{a}" for a in self.attributes], [f"z_{z}" for z in self.code_names],
          title=f"mean entropy of C_m(z_k), step {self.trained.step}",
          row_title="classifier", col_title="code",
          vmax=max(math.log(n) for n in self.num_classes))
      self.images_written["entropy"] = path
    return ent

  def knn(self, k: int = 5) -> None:
    """``knn_acc/<a>/z_<code>``: leave-one-out 5-NN accuracy of attribute a's test labels
    from each (flattened) code (chance ≈ 1/|a|): leakage no classifier head can hide."""
    enc = self.encode()
    for z, codes in zip(self.code_names, enc.codes):
      nearest = knn_neighbours(codes, k)
      for a in self.attributes:
        self.metrics[f"knn_acc/{a}/z_{z}"] = knn_vote_accuracy(nearest, self.test.labels[a])

  def hopkins(self) -> None:
    """Table III: per expression cluster, on the flattened expression codes."""
    if "expression" not in self.attributes:
      self.notes.append("Hopkins statistic skipped: the model has no expression attribute.")
      return
    k = self.attributes.index("expression")
    enc = self.encode()
    names = self.class_names("expression")
    mean, std = hopkins_per_class(enc.codes[k], self.test.labels["expression"], len(names),
                                  self.options.hopkins_draws, self.options.seed,
                                  self.options.hopkins_fraction)
    for c, name in enumerate(names):
      if np.isfinite(mean[c]):
        self.metrics[f"hopkins/expression/{name}"] = float(mean[c])
        self.metrics[f"hopkins/expression/{name}_std"] = float(std[c])
    if np.isfinite(mean).any():
      self.metrics["hopkins/expression/mean"] = float(np.nanmean(mean))

  def embeddings(self) -> None:
    """Fig. 4: PCA of each code coloured by each attribute's labels (PNG)."""
    if not self.options.write_images:
      return
    enc = self.encode()
    emb = {f"z_{z}": pca_2d(c) for z, c in zip(self.code_names, enc.codes)}
    labels = {a: self.test.labels[a] for a in self.attributes}
    names = {a: self.class_names(a) for a in self.attributes}
    path = self._image_path("embeddings")
    write_embedding_png(path, emb, labels, names,
                        title=f"PCA of each code on the test split, step {self.trained.step}")
    self.images_written["embeddings"] = path

  def synthesis(self) -> None:
    """Table IV: every neutral test image translated to every expression."""
    if "expression" not in self.attributes:
      self.notes.append("Expression synthesis skipped: the model has no expression attribute.")
      return
    names = self.class_names("expression")
    if "neutral" not in names:
      self.notes.append("Expression synthesis skipped: the dataset has no neutral class.")
      return
    k = self.attributes.index("expression")
    num_classes = len(names)
    neutral = np.flatnonzero(self.test.labels["expression"] == names.index("neutral"))
    if not len(neutral):
      self.notes.append("Expression synthesis skipped: no neutral test image.")
      return
    enc = self.encode()
    n0 = len(neutral)
    if self.options.transfer == "mean_code":
      from attrdis import sampling  # pylint: disable=g-import-not-at-top
      means = np.asarray(sampling.load_or_compute_mean_codes(
          self.workdir, self.trained, self.builder, k, batch_size=self.options.batch_size))
      usable = [c for c in range(num_classes) if np.all(np.isfinite(means[c]))]
      code_for = lambda c: np.broadcast_to(means[c], (n0,) + means.shape[1:])
    else:
      rng = np.random.default_rng(self.options.seed)
      ident = self.test.labels.get("identity")
      refs = np.zeros((n0, num_classes), np.int64)
      for r, i in enumerate(neutral):
        for c in range(num_classes):
          pool = np.flatnonzero(self.test.labels["expression"] == c)
          if not len(pool):
            continue
          if ident is not None and (ident[pool] != ident[i]).any():
            pool = pool[ident[pool] != ident[i]]  # another identity's expression
          refs[r, c] = rng.choice(pool)
      usable = [c for c in range(num_classes)
                if (self.test.labels["expression"] == c).any()]
      code_for = lambda c: enc.codes[k][refs[:, c]]
    self.progress(f"expression synthesis: {n0} neutral test images x {len(usable)} "
                  f"expressions ({self.options.transfer})")
    model = self.eval_model()
    sources = [c[neutral] for c in enc.codes]
    read = np.full((n0, num_classes), -1, np.int64)
    features, shown = [], []
    rows = min(8, n0)
    for c in usable:  # one target class at a time: memory stays O(neutral images)
      codes = [code_for(c) if s == k else z for s, z in enumerate(sources)]
      out = decode_codes(self.models, self.params["gen"], codes, self.options.batch_size)
      read[:, c] = model.classes(out)["expression"]
      if self.inception() is not None:
        features.append(self.inception()(out, value_range=(-1, 1)))
      shown.append(out[:rows])
      self.progress(f"translated {n0} images to {names[c]}")
    acc = per_target_accuracy(np.where(read < 0, -1, read), num_classes)
    for c in usable:
      self.metrics[f"synthesis/acc/{names[c]}"] = float(acc[c])
    self.metrics["synthesis/acc_mean"] = float(np.mean(acc[usable]))
    self.metrics["synthesis/acc_std"] = float(np.std(acc[usable]))
    self.metrics["synthesis/num_sources"] = float(n0)
    if features:
      from attrdis import fid  # pylint: disable=g-import-not-at-top
      self.progress(f"FID: Inception features of {len(self.test)} real test images")
      real = self.inception()(ec.to_float(self.test.images), value_range=(-1, 1))
      translated = np.concatenate(features)
      self.metrics["synthesis/fid"] = fid.fid_from_features(translated, real)
      kid = fid.kid_from_features(translated, real, seed=self.options.seed)
      self.metrics["synthesis/kid"] = kid.kid
      self.metrics["synthesis/kid_std"] = kid.std
    if self.options.write_images:
      grid = np.concatenate([ec.to_float(self.test.images[neutral[:rows]])[:, None],
                             np.stack(shown, axis=1)], axis=1)
      path = self._image_path("synthesis")
      images_lib.save_png(images_lib.make_grid(grid), path)
      self.images_written["synthesis"] = path

  def ground_truth(self) -> None:
    """Synthetic faces: transfers against the true renderings, readers, intensity."""
    if self.dataset != SYNTHETIC:
      return
    from attrdis.synthetic import render  # pylint: disable=g-import-not-at-top
    o = self.options
    enc = self.encode()
    test = self.test
    src, tgt = choose_pairs(test.labels["identity"], o.num_pairs, o.seed)
    stored = int(self.info.stored_image_size) if self.info is not None else int(
        self.config.image_size)
    size = int(self.config.image_size)
    factors = self.factors()
    real = ec.to_float(test.images)
    model = self.eval_model()
    readable = [t.name for t in model.tasks if t.kind == "class"]
    read = self.reader()
    truth_of = {}
    summary: dict[str, list[float]] = {}
    grids = []
    for names in attribute_sets(self.attributes):
      name = set_name(names)
      take = [self.attributes.index(a) for a in names]
      pred = decode_codes(self.models, self.params["gen"], swap_codes(enc.codes, src, tgt, take),
                          o.batch_size)
      truth = self._render_truth(render, factors, src, tgt, names, stored, size)
      truth_of[name] = truth
      for key, value in ground_truth_errors(pred, truth, real[src], real[tgt], name).items():
        self.metrics[key] = value
        summary.setdefault(key.split("/")[-1], []).append(value)
      src_labels = {b: self._label_of(b, src) for b in list(readable) + ["identity"]}
      tgt_labels = {b: self._label_of(b, tgt) for b in list(readable) + ["identity"]}
      truth_read = read(truth)
      for prefix, images, ref in ((f"transfer/{name}/", pred, truth_read),
                                  (f"transfer/{name}/truth_", truth, None)):
        accs = transfer_accuracy(truth_read if ref is None else read(images), src_labels,
                                 tgt_labels, names, prefix, truth_read=ref)
        self.metrics.update(accs)
        for key in ("acc_transferred", "acc_kept", "acc_transferred_readable",
                    "acc_kept_readable"):
          if prefix + key in accs:
            summary.setdefault(("truth_" if ref is None else "") + key, []).append(
                accs[prefix + key])
      for b, ratio in of_ceiling(self.metrics, f"transfer/{name}/").items():
        self.metrics[f"transfer/{name}/of_ceiling/{b}"] = ratio
        kind = "transferred" if b in names else "kept"
        summary.setdefault(f"of_ceiling_{kind}_min", []).append(ratio)
      r = min(3, len(src))  # one row per set: (source, target, transfer, truth) x 3 pairs
      grids.append(np.stack([real[src[:r]], real[tgt[:r]], pred[:r], truth[:r]],
                            axis=1).reshape((1, 4 * r) + pred.shape[1:]))
      self.progress(f"ground truth: {name} done ({len(src)} pairs)")
    for key, values in summary.items():
      group = "gt" if key.startswith(("l1", "psnr", "skill", "changed")) else "transfer"
      reduce = np.min if key.endswith("_min") else np.mean
      self.metrics[f"{group}/all/{key}"] = float(reduce(values))
    self._intensity(render, factors, enc, read, stored, size)
    if o.write_images and grids:
      path = self._image_path("transfer")
      images_lib.save_png(images_lib.make_grid(np.concatenate(grids, axis=0)), path)
      self.images_written["transfer"] = path

  def reader(self) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``read(images)`` → {attribute: class per image}: the evaluation networks' classes and,
    where they regress the renderer's identity parameters, the identity of the nearest
    test-identity prototype."""
    if self._reader is None:
      model = self.eval_model()
      readable = [t.name for t in model.tasks if t.kind == "class"]
      protos = None
      if model.task("identity_params") is not None and "identity" in self.test.labels:
        protos = ec.identity_prototypes(model.classes(self.test.images)["identity_params"],
                                        self.test.labels["identity"])

      def read(images) -> dict[str, np.ndarray]:
        out = model.classes(images)
        r = {b: out[b] for b in readable}
        if protos is not None:
          r["identity"] = ec.identify(out["identity_params"], *protos)
        return r
      self._reader = read
    return self._reader

  def code_sources(self) -> None:
    """Which code an attribute's appearance comes from. For each attribute a the evaluation
    networks read, random pairs (source, target) of different identities are decoded with
    the target supplying z_a only, z_a and z_0, or z_0 only (the source the rest), and
    ``source_of/<a>/<slots>`` counts how often a is read as the target's (over the pairs
    whose labels of a differ). ``recon/read/<a>``: reconstructions read as their own label,
    beside ``recon/read_real/<a>`` on the real images (the readers' ceiling)."""
    o = self.options
    enc = self.encode()
    read = self.reader()
    labels = {a: self._label_of(a, np.arange(len(self.test))) for a in self.attributes}
    read_rec, read_real = read(enc.recon), read(self.test.images)
    readable = [a for a in self.attributes if a in read_rec]
    for a in readable:
      self.metrics[f"recon/read/{a}"] = float(np.mean(read_rec[a] == labels[a]))
      self.metrics[f"recon/read_real/{a}"] = float(np.mean(read_real[a] == labels[a]))
    src, tgt = choose_pairs(self.test.labels["identity"], o.num_pairs, o.seed + 2)
    rest = len(self.attributes)
    for a in readable:
      differ = labels[a][src] != labels[a][tgt]
      if not differ.any():
        continue
      k = self.attributes.index(a)
      for slots, take in ((f"z_{a}", [k]), (f"z_{a}+z_{REST}", [k, rest]),
                          (f"z_{REST}", [rest])):
        out = decode_codes(self.models, self.params["gen"],
                           swap_codes(enc.codes, src, tgt, take), o.batch_size)
        got = read(out)[a]
        self.metrics[f"source_of/{a}/{slots}"] = float(np.mean((got == labels[a][tgt])[differ]))

  def linear_probes(self) -> None:
    """``linear_probe/<a>/z_<k>``: test accuracy of a linear softmax classifier of attribute
    a on the flattened code z_k, fitted on the training split's codes (not for identity,
    whose test identities are held out of training)."""
    probed = [a for a in self.attributes if a != "identity"]
    if not probed:
      return
    train = load_split(self.config, self.builder, "train", self.progress)
    train_labels = np.stack([train.labels[a] for a in self.attributes], axis=1)
    self.progress(f"linear probes: encoding {len(train)} training images")
    train_codes = encode_split(self.models, self.params, train.images, train_labels,
                               self.options.batch_size).codes
    enc = self.encode()
    for i, (z, code_train, code_test) in enumerate(zip(self.code_names, train_codes,
                                                      enc.codes)):
      self.progress(f"linear probes: z_{z} ({i + 1}/{len(self.code_names)}), "
                    f"{code_train[0].size} features")
      for a in probed:
        m = self.attributes.index(a)
        predict = fit_linear_probe(code_train, train.labels[a], self.num_classes[m],
                                   seed=self.options.seed)
        self.metrics[f"linear_probe/{a}/z_{z}"] = float(
            np.mean(predict(code_test) == self.test.labels[a]))

  def _label_of(self, b: str, idx) -> np.ndarray:
    return self.test.labels[b][idx]

  def factors(self):
    from attrdis.synthetic import factors as factors_lib  # pylint: disable=g-import-not-at-top
    t = self.test
    return factors_lib.FactorBatch(
        identity=t.values["identity_params"].astype(np.float32),
        expression=t.labels["expression"].astype(np.int32),
        intensity=t.values["intensity"].astype(np.float32),
        illumination=t.labels["illumination"].astype(np.int32),
        gaze=t.labels["gaze"].astype(np.int32),
        color=t.labels["color"].astype(np.int32))

  @staticmethod
  def _render_truth(render, factors, src, tgt, names, stored: int, size: int) -> np.ndarray:
    truth = render.transfer_ground_truth_batch([factors[int(i)] for i in src],
                                               [factors[int(j)] for j in tgt], names, stored)
    return np.stack([input_pipeline.to_model_image(t, size) for t in truth])

  def _intensity(self, render, factors, enc, read, stored: int, size: int) -> None:
    """Intensity preservation: every non-neutral test image as the target of an expression
    transfer from a random test image of another identity."""
    if "expression" not in self.attributes:
      return
    model = self.eval_model()
    if model.task("intensity") is None:
      return
    k = self.attributes.index("expression")
    ident = self.test.labels["identity"]
    tgt = np.flatnonzero(self.test.labels["expression"] != 0)
    if len(tgt) < 3:
      return
    rng = np.random.default_rng(self.options.seed + 1)
    src = np.asarray([rng.choice(np.flatnonzero(ident != ident[j])) for j in tgt])
    pred = decode_codes(self.models, self.params["gen"], swap_codes(enc.codes, src, tgt, [k]),
                        self.options.batch_size)
    truth = self._render_truth(render, factors, src, tgt, ("expression",), stored, size)
    true_intensity = self.test.values["intensity"][tgt]
    read_pred = model.predict(pred)["intensity"][:, 0]
    read_truth = model.predict(truth)["intensity"][:, 0]
    self.metrics["intensity/corr"] = ec.pearson(true_intensity, read_pred)
    self.metrics["intensity/corr_truth"] = ec.pearson(true_intensity, read_truth)
    self.metrics["intensity/mae"] = float(np.mean(np.abs(read_pred - true_intensity)))
    self.metrics["intensity/num_pairs"] = float(len(tgt))

  def run(self) -> dict[str, float]:
    t0 = time.time()
    steps = [("reconstruction", self.reconstruction), ("classifier entropy", self.entropy),
             ("Hopkins statistic", self.hopkins), ("k-NN leakage", self.knn),
             ("linear probes", self.linear_probes), ("code embeddings", self.embeddings),
             ("expression synthesis", self.synthesis), ("ground truth", self.ground_truth),
             ("code sources", self.code_sources)]
    for name, fn in steps:
      self.progress(f"{name} ({time.time() - t0:.0f} s)")
      fn()
    if not self.options.fid_weights:
      self.notes.append("FID skipped: no --fid_weights given (pytorch-fid's "
                        "pt_inception-2015-12-05-6726825d.pth cannot be downloaded here).")
    self.progress(f"evaluation done in {time.time() - t0:.0f} s")
    return self.metrics

  def settings(self) -> dict[str, Any]:
    d = self.config.dataset
    return {
        "workdir": os.path.abspath(os.path.expanduser(self.workdir)),
        "step": int(self.trained.step),
        "dataset": d.name, "builder_config": d.builder_config, "data_dir": d.data_dir,
        "attributes": list(self.attributes), "image_size": int(self.config.image_size),
        "loss_weights": {k: float(v) for k, v in self.config.loss_weights.items()},
        "num_test_images": len(self.test),
        **{k: v for k, v in dataclasses.asdict(self.options).items()},
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
        "images": dict(self.images_written),
    }


# ----------------------------------------------------------------------------------------
# The periodic evaluation for the training loop.

def periodic_eval(config: ml_collections.ConfigDict, workdir: str, models, params,
                  step: int, num_pairs: int = 64, batch_size: int = 64) -> dict[str, float]:
  """A cheap subset for ``config.eval_every_steps`` (no evaluation classifiers, no FID, no
  files): test reconstruction error, the entropy and latent-accuracy matrices, the Hopkins
  statistic per expression cluster (one draw) and, on synthetic faces, the ground-truth
  L1/PSNR of single-attribute transfers (``num_pairs`` pairs) beside the two trivial
  answers. ``params`` = {'gen', 'cls', ...}; returns metric name → float."""
  trained = checkpoints.Trained(config=config, models=models, params=params, step=int(step))
  opts = Options(num_pairs=num_pairs, batch_size=batch_size, hopkins_draws=1,
                 write_images=False)
  builder = input_pipeline.get_builder(config.dataset)  # already prepared by training
  ev = Evaluator(trained, workdir, opts, progress=lambda s: None, builder=builder, info=None)
  ev.reconstruction()
  ev.entropy()
  ev.hopkins()
  if ev.dataset == SYNTHETIC:
    from attrdis.synthetic import render  # pylint: disable=g-import-not-at-top
    enc = ev.encode()
    src, tgt = choose_pairs(ev.test.labels["identity"], num_pairs, 0)
    stored = int(builder.info.features["image"].shape[0])
    factors = ev.factors()
    real = ec.to_float(ev.test.images)
    for a in ev.attributes:
      pred = decode_codes(models, params["gen"],
                          swap_codes(enc.codes, src, tgt, [ev.attributes.index(a)]), batch_size)
      truth = Evaluator._render_truth(render, factors, src, tgt, (a,), stored,
                                      int(config.image_size))
      ev.metrics.update(ground_truth_errors(pred, truth, real[src], real[tgt], a))
  return {k: float(v) for k, v in ev.metrics.items()}


# ----------------------------------------------------------------------------------------
# The command.

def format_table(metrics: Mapping[str, float]) -> str:
  width = max((len(k) for k in metrics), default=10)
  lines = []
  for k in sorted(metrics):
    v = metrics[k]
    lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) and abs(v) < 1e5 else
                 f"{k:<{width}}  {v}")
  return "\n".join(lines)


def evaluate(workdir: str, step: int | None = None, options: Options | None = None,
             out: str | None = None, data_dir: str | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """What the command does: returns (and writes to ``out``, default W/eval/<step>.json)
  ``{"metrics", "settings", "notes"}``."""
  options = options or Options()
  if options.transfer not in TRANSFER_MODES:
    raise EvaluationError(f"--transfer must be one of {', '.join(TRANSFER_MODES)}, got "
                          f"{options.transfer!r}")
  if options.fid_weights and not os.path.isfile(options.fid_weights):
    from attrdis import fid  # pylint: disable=g-import-not-at-top
    raise EvaluationError(fid.missing_weights_message(options.fid_weights))
  for name in ("num_pairs", "batch_size", "hopkins_draws", "classifier_steps"):
    if getattr(options, name) < 1:
      raise EvaluationError(f"--{name} must be at least 1, got {getattr(options, name)}")
  if not os.path.isdir(os.path.expanduser(workdir)):
    raise EvaluationError(f"workdir {workdir} does not exist")
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Orbax's restore logs a page of INFO lines
  try:
    trained = checkpoints.load_trained(workdir, step)
  finally:
    logging.set_verbosity(verbosity)
  if data_dir:
    trained.config.dataset.data_dir = data_dir
  ev = Evaluator(trained, workdir, options, progress=progress)
  if options.fid_weights:
    from attrdis import fid  # pylint: disable=g-import-not-at-top
    try:
      ev.inception()
    except fid.FIDError as e:
      raise EvaluationError(str(e)) from None
  metrics = ev.run()
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    ev.notes.append(f"not finite: {', '.join(sorted(bad))}")
  result = {"metrics": {k: float(v) for k, v in sorted(metrics.items())},
            "settings": ev.settings(), "notes": ev.notes}
  out = out or os.path.join(ev._eval_dir(), f"{trained.step}.json")  # pylint: disable=protected-access
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, allow_nan=True)
  os.replace(tmp, out)
  result["settings"]["out"] = out
  return result


class _Parser(argparse.ArgumentParser):

  def error(self, message):  # one line instead of usage + message
    raise EvaluationError(message)


def build_parser() -> argparse.ArgumentParser:
  d = Options()
  p = _Parser(prog="python -m attrdis.evaluate", description=__doc__,
              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="The training workdir (its checkpoints/).")
  p.add_argument("--step", type=int, default=None, help="Checkpoint step (default: latest).")
  p.add_argument("--fid_weights", default=None,
                 help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or an .npz of it); "
                      "without it FID is skipped.")
  p.add_argument("--out", default=None, help="The JSON file (default W/eval/<step>.json).")
  p.add_argument("--transfer", default=d.transfer, choices=TRANSFER_MODES,
                 help="Table IV: the class-mean training code, or a test image's code.")
  p.add_argument("--num_pairs", type=int, default=d.num_pairs,
                 help="Synthetic faces: random test pairs per attribute set.")
  p.add_argument("--batch_size", type=int, default=d.batch_size)
  p.add_argument("--hopkins_draws", type=int, default=d.hopkins_draws)
  p.add_argument("--classifier_steps", type=int, default=d.classifier_steps,
                 help="Training steps of the evaluation classifiers (trained once per workdir).")
  p.add_argument("--classifier_dir", default=None,
                 help="Where the evaluation networks are kept (default W/eval_classifiers): "
                      "models of the same dataset and image size can share one folder, so "
                      "that the networks are trained once.")
  p.add_argument("--seed", type=int, default=d.seed)
  p.add_argument("--data_dir", default=None,
                 help="Where the prepared dataset is, if not where training found it.")
  p.add_argument("--no_images", action="store_true", help="Write no PNGs.")
  p.add_argument("--compilation_cache", default=None, help=compilation_cache.FLAG_HELP)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  logging.set_verbosity(logging.INFO)
  t0 = time.time()

  def progress(msg: str) -> None:
    print(f"[evaluate {time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

  try:
    args = build_parser().parse_args(argv)
    compilation_cache.enable(args.compilation_cache)
    options = Options(transfer=args.transfer, fid_weights=args.fid_weights,
                      num_pairs=args.num_pairs, batch_size=args.batch_size,
                      hopkins_draws=args.hopkins_draws, classifier_steps=args.classifier_steps,
                      seed=args.seed, write_images=not args.no_images,
                      classifier_dir=args.classifier_dir)
    result = evaluate(args.workdir, args.step, options, args.out, args.data_dir, progress)
  except (EvaluationError, ConfigError, checkpoints.CheckpointError,
          ec.EvalClassifierError, errors.InputError) as e:
    logging.flush()
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(format_table(result["metrics"]))
  for note in result["notes"]:
    print(f"note: {note}")
  print(f"wrote {result['settings']['out']}")
  for path in result["settings"]["images"].values():
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""How much of each attribute each code carries: the classifier heads' entropy and accuracy
on every code (Fig. 5), leave-one-out k-NN accuracy, and linear probes.

* ``entropy/C_<m>/z_<k>`` — mean entropy (nats) of classifier C_m's posterior on the codes
  z_k, for every pair incl. z_0 (``rest``); ``entropy/off_diagonal_normalized`` the mean over
  k ≠ m of entropy / log|m| (1 = uniform), ``entropy/diagonal_mean``; the matrix is drawn in
  ``W/eval/entropy_<step>.png``. ``latent_acc/C_<m>/z_<k>`` — how often C_m(z_k) names the
  image's m label (not for identity, whose test identities are held out of training).
* ``knn_acc/<a>/z_<k>`` — leave-one-out 5-nearest-neighbour accuracy of attribute a's test
  labels from the flattened codes z_k (chance ≈ 1/|a|): leakage whatever the heads see.
* ``linear_probe/<a>/z_<k>`` — test accuracy of a linear softmax classifier of a on the
  flattened z_k, fitted on the training split's codes (not for identity).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attrdis.evaluation import context as context_lib
from attrdis.evaluation import plots


# ----------------------------------------------------------------------------------------
# k nearest neighbours.


@functools.partial(jax.jit, static_argnames=("k",))
def _knn_indices(x, k):
  xc = x - jnp.mean(x, axis=0)
  sq = jnp.sum(xc * xc, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(xc, xc.T, precision=jax.lax.Precision.HIGHEST)
  d2 = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, d2)
  return jax.lax.top_k(-d2, k)[1]


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


# ----------------------------------------------------------------------------------------
# Linear probes.


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


def fit_linear_probe(
  x_train,
  y_train,
  num_classes: int,
  steps: int = 300,
  l2: float = 1e-4,
  learning_rate: float = 0.01,
  seed: int = 0,
):
  """A linear softmax classifier of the flattened rows of ``x_train`` (standardised with the
  training mean and std), fitted full-batch with Adam and an L2 penalty; returns
  ``predict(x) -> classes``."""
  x = np.asarray(x_train, np.float32).reshape(len(x_train), -1)
  mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
  w, b = _fit_softmax(
    jnp.asarray((x - mean) / std),
    jnp.asarray(y_train, jnp.int32),
    int(num_classes),
    int(steps),
    l2,
    learning_rate,
    jax.random.key(seed),
  )

  def predict(x_new) -> np.ndarray:
    xn = (np.asarray(x_new, np.float32).reshape(len(x_new), -1) - mean) / std
    return np.asarray(jnp.argmax(jnp.matmul(jnp.asarray(xn), w) + b, axis=-1))

  return predict


# ----------------------------------------------------------------------------------------
# The metrics.


def entropy(ctx: context_lib.Context) -> dict[str, float]:
  """Fig. 5: the entropy and latent-accuracy matrices (and their PNG)."""
  enc = ctx.encode()
  ent = enc.entropy.mean(axis=0)  # (M, M+1)
  acc = enc.correct.mean(axis=0)
  out, off = {}, []
  for m, a in enumerate(ctx.attributes):
    for k, z in enumerate(ctx.code_names):
      out[f"entropy/C_{a}/z_{z}"] = float(ent[m, k])
      if a != "identity":  # the test identities are held out: C_identity cannot name them
        out[f"latent_acc/C_{a}/z_{z}"] = float(acc[m, k])
      if k != m:
        off.append(ent[m, k] / math.log(ctx.num_classes[m]))
  out["entropy/off_diagonal_normalized"] = float(np.mean(off))
  out["entropy/diagonal_mean"] = float(np.mean([ent[m, m] for m in range(len(ctx.attributes))]))
  if ctx.options.write_images:
    path = ctx.image_path("entropy")
    plots.write_entropy_png(path, ent, ctx.attributes, ctx.code_names, ctx.num_classes, ctx.step)
    ctx.images["entropy"] = path
  return out


def knn(ctx: context_lib.Context, k: int = 5) -> dict[str, float]:
  """``knn_acc/<a>/z_<code>``: leave-one-out 5-NN accuracy of attribute a's test labels
  from each (flattened) code."""
  out = {}
  for z, codes in zip(ctx.code_names, ctx.encode().codes):
    nearest = knn_neighbours(codes, k)
    for a in ctx.attributes:
      out[f"knn_acc/{a}/z_{z}"] = knn_vote_accuracy(nearest, ctx.test.labels[a])
  return out


def linear_probes(ctx: context_lib.Context) -> dict[str, float]:
  """``linear_probe/<a>/z_<k>``: a linear probe of each attribute but identity on each code,
  fitted on the training split's codes, its accuracy on the test split's."""
  probed = [a for a in ctx.attributes if a != "identity"]
  if not probed:
    return {}
  train = ctx.train_split()
  train_labels = np.stack([train.labels[a] for a in ctx.attributes], axis=1)
  ctx.progress(f"linear probes: encoding {len(train)} training images")
  train_codes = context_lib.encode_split(
    ctx.models, ctx.params, train.images, train_labels, ctx.options.batch_size
  ).codes
  out = {}
  for i, (z, code_train, code_test) in enumerate(
    zip(ctx.code_names, train_codes, ctx.encode().codes)
  ):
    ctx.progress(
      f"linear probes: z_{z} ({i + 1}/{len(ctx.code_names)}), {code_train[0].size} features"
    )
    for a in probed:
      m = ctx.attributes.index(a)
      predict = fit_linear_probe(
        code_train, train.labels[a], ctx.num_classes[m], seed=ctx.options.seed
      )
      out[f"linear_probe/{a}/z_{z}"] = float(np.mean(predict(code_test) == ctx.test.labels[a]))
  return out

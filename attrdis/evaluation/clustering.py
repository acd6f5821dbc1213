"""How the codes cluster: the Hopkins statistic within each expression cluster (Table III),
and 2-D embeddings of the codes (PCA, exact t-SNE) for Fig. 4.

* ``hopkins/expression/<class>`` — the Hopkins statistic of the flattened expression codes of
  each expression cluster (mean over ``options.hopkins_draws`` random draws, ``..._std``
  their spread), and ``hopkins/expression/mean``.
* ``W/eval/embeddings_<step>.png`` — the PCA of every code, coloured by every attribute.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attrdis import cluster_metrics
from attrdis.evaluation import context as context_lib
from attrdis.evaluation import plots


def hopkins_per_class(
  codes, labels, num_classes: int, draws: int = 10, seed: int = 0, sample_fraction: float = 0.1
):
  """Hopkins statistic of the (flattened) codes of each class: (mean (C,), std (C,)) over
  ``draws`` random draws (keys seed, seed+1, ...); NaN for classes with < 2 points."""
  codes = np.asarray(codes, np.float32).reshape(len(codes), -1)
  labels = np.asarray(labels)
  mean, std = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
  for c in range(num_classes):
    x = codes[labels == c]
    if len(x) < 2:
      continue
    hs = [
      cluster_metrics.hopkins_statistic(x, key=seed + r, sample_fraction=sample_fraction)
      for r in range(draws)
    ]
    mean[c], std[c] = float(np.mean(hs)), float(np.std(hs))
  return mean, std


# ----------------------------------------------------------------------------------------
# PCA.


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


# ----------------------------------------------------------------------------------------
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
  return jnp.sum(
    jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, 1e-30)) - jnp.log(jnp.maximum(q, 1e-30))), 0.0)
  )


def tsne_gradient(y, p):
  """The closed-form gradient of :func:`tsne_kl`: 4 Σ_j (p_ij − q_ij)(y_i − y_j)/(1 + d²_ij)."""
  n = y.shape[0]
  mask = ~jnp.eye(n, dtype=bool)
  num = jnp.where(mask, 1.0 / (1.0 + _pairwise_sq(y)), 0.0)
  q = num / jnp.sum(num)
  w = (p - q) * num
  return 4.0 * (
    jnp.sum(w, axis=1)[:, None] * y - jnp.matmul(w, y, precision=jax.lax.Precision.HIGHEST)
  )


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

  (y, _, _), _ = jax.lax.scan(step, (y0, jnp.zeros_like(y0), jnp.ones_like(y0)), jnp.arange(steps))
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
  y = _tsne_run(
    p, jnp.asarray(y0, jnp.float32), int(steps), min(250, int(steps) // 3), max(n / 12.0, 50.0)
  )
  return np.asarray(y)


# ----------------------------------------------------------------------------------------
# The metrics.


def hopkins(ctx: context_lib.Context) -> dict[str, float]:
  """Table III: per expression cluster, on the flattened expression codes."""
  if "expression" not in ctx.attributes:
    ctx.notes.append("Hopkins statistic skipped: the model has no expression attribute.")
    return {}
  k = ctx.attributes.index("expression")
  names = ctx.class_names("expression")
  o = ctx.options
  mean, std = hopkins_per_class(
    ctx.encode().codes[k],
    ctx.test.labels["expression"],
    len(names),
    o.hopkins_draws,
    o.seed,
    o.hopkins_fraction,
  )
  out = {}
  for c, name in enumerate(names):
    if np.isfinite(mean[c]):
      out[f"hopkins/expression/{name}"] = float(mean[c])
      out[f"hopkins/expression/{name}_std"] = float(std[c])
  if np.isfinite(mean).any():
    out["hopkins/expression/mean"] = float(np.nanmean(mean))
  return out


def embeddings(ctx: context_lib.Context) -> dict[str, float]:
  """Fig. 4: the PCA of each code coloured by each attribute's labels (a PNG, no number)."""
  if not ctx.options.write_images:
    return {}
  emb = {f"z_{z}": pca_2d(c) for z, c in zip(ctx.code_names, ctx.encode().codes)}
  labels = {a: ctx.test.labels[a] for a in ctx.attributes}
  names = {a: ctx.class_names(a) for a in ctx.attributes}
  path = ctx.image_path("embeddings")
  plots.write_embedding_png(
    path, emb, labels, names, title=f"PCA of each code on the test split, step {ctx.step}"
  )
  ctx.images["embeddings"] = path
  return {}

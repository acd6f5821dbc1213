"""Cluster-structure and classifier-entropy metrics of the evaluation (docs/design.md §4).

* :func:`hopkins_statistic` — H = Σu / (Σu + Σw) (Table III): u = distance from a uniform
  random point in the data's bounding box to its nearest data point; w = distance from a
  sampled data point to its nearest *other* data point; distances to the power 1; about 10 %
  of the points sampled (at least 1). ≈ 0.5 for structureless data, → 1 for tight clusters.
  Deterministic given the key/seed; nearest neighbours by a jitted pairwise search.
* :func:`mean_entropy` — mean entropy (nats) of softmax(logits) (Fig. 5: C_m on codes z_m′).
* :func:`write_heatmap_png` — a labelled heatmap of a table entropy[m][m′], numpy + PIL only.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

_HI = jax.lax.Precision.HIGHEST

# --------------------------------------------------------------------------------------------
# Hopkins statistic.
# --------------------------------------------------------------------------------------------


def _as_key(key) -> jax.Array:
  if isinstance(key, (int, np.integer)):
    return jax.random.key(int(key))
  return key


def _flatten(x) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  if x.ndim < 2:
    raise ValueError(f"data must be (n, ...) with n points, got shape {x.shape}")
  return x.reshape(x.shape[0], -1)


def hopkins_num_samples(n: int, sample_fraction: float = 0.1) -> int:
  """How many probes: round(fraction · n), at least 1 (and at most n)."""
  if not 0.0 < sample_fraction <= 1.0:
    raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
  return int(min(n, max(1, round(sample_fraction * n))))


def hopkins_samples(x, key, sample_fraction: float = 0.1) -> tuple[jax.Array, jax.Array]:
  """The random draws of the statistic: (uniform points (m, d), sampled data indices (m,)).

  Uniform points are drawn in the bounding box of the (flattened) data; indices are drawn
  without replacement. ``key`` is a jax PRNG key or an int seed.
  """
  x = _flatten(x)
  n, d = x.shape
  if n < 2:
    raise ValueError(f"the Hopkins statistic needs at least 2 points, got {n}")
  m = hopkins_num_samples(n, sample_fraction)
  k_uniform, k_index = jax.random.split(_as_key(key))
  lo, hi = x.min(axis=0), x.max(axis=0)
  uniform = lo + (hi - lo) * jax.random.uniform(k_uniform, (m, d), jnp.float32)
  idx = jax.random.choice(k_index, n, (m,), replace=False)
  return uniform, idx


def _nearest_distances(queries, x, exclude):
  """Distance from each query to its nearest row of x, skipping row ``exclude[i]`` (-1: none).

  The neighbour is chosen with the Gram form |q|² + |x|² − 2 q·x (one matmul), then its
  distance is recomputed directly from the difference, so cancellation can at worst swap two
  nearly equidistant neighbours, never distort the returned distance.
  """
  d2 = (
    jnp.sum(queries * queries, axis=1)[:, None]
    + jnp.sum(x * x, axis=1)[None, :]
    - 2.0 * jnp.matmul(queries, x.T, precision=_HI)
  )
  d2 = jnp.where(jnp.arange(x.shape[0])[None, :] == exclude[:, None], jnp.inf, d2)
  nearest = jnp.argmin(d2, axis=1)
  return jnp.linalg.norm(queries - x[nearest], axis=1)


@jax.jit
def _hopkins_core(x, uniform, idx):
  centre = jnp.mean(x, axis=0)  # shifts nothing but reduces cancellation in the Gram form
  xc, uc = x - centre, uniform - centre
  u = _nearest_distances(uc, xc, jnp.full(uc.shape[0], -1))
  w = _nearest_distances(xc[idx], xc, idx)
  return jnp.sum(u) / (jnp.sum(u) + jnp.sum(w)), u, w


def hopkins_from_samples(x, uniform, idx, return_distances: bool = False):
  """H from given draws (see :func:`hopkins_samples`); optionally also the u and w distances."""
  x = _flatten(x)
  uniform = jnp.asarray(uniform, jnp.float32).reshape(-1, x.shape[1])
  idx = jnp.asarray(idx, jnp.int32)
  h, u, w = _hopkins_core(x, uniform, idx)
  if return_distances:
    return float(h), np.asarray(u), np.asarray(w)
  return float(h)


def hopkins_statistic(x, key=0, sample_fraction: float = 0.1) -> float:
  """Hopkins statistic of points x (n, ...) (flattened per point), docs/design.md §4.3.

  ``key``: a jax PRNG key or an int seed; the result is a deterministic function of it.
  Returns NaN when all points coincide (then every distance is 0).
  """
  uniform, idx = hopkins_samples(x, key, sample_fraction)
  return hopkins_from_samples(x, uniform, idx)


# --------------------------------------------------------------------------------------------
# Classifier entropy.
# --------------------------------------------------------------------------------------------


@jax.jit
def _entropies(logits):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  p = jnp.exp(logp)
  return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)


def entropies(logits) -> np.ndarray:
  """Entropy (nats) of softmax(logits) for each row of logits (n, classes)."""
  logits = jnp.asarray(logits)
  if logits.ndim != 2 or logits.shape[1] < 1:
    raise ValueError(f"logits must be (n, classes), got shape {logits.shape}")
  return np.asarray(_entropies(logits))


def mean_entropy(logits) -> float:
  """Mean over rows of the entropy (natural log) of softmax(logits); logits (n, classes).

  Uniform logits give log(classes); confident (one-hot-like) logits give ≈ 0.
  """
  return float(np.mean(entropies(logits)))


def max_entropy(num_classes: int) -> float:
  """log(num_classes): the entropy of the uniform posterior, the ceiling of Fig. 5."""
  return math.log(num_classes)


# --------------------------------------------------------------------------------------------
# Heatmap (numpy + PIL, no matplotlib).
# --------------------------------------------------------------------------------------------

# Anchors of a viridis-like perceptual colour map (dark blue → green → yellow).
_CMAP_ANCHORS = np.array(
  [
    [68, 1, 84],
    [72, 40, 120],
    [62, 74, 137],
    [49, 104, 142],
    [38, 130, 142],
    [31, 158, 137],
    [53, 183, 121],
    [109, 205, 89],
    [180, 222, 44],
    [253, 231, 37],
  ],
  np.float64,
)


def colormap(values) -> np.ndarray:
  """RGB uint8 colours (…, 3) of values in [0, 1] (clipped), piecewise linear over the anchors."""
  v = np.clip(np.asarray(values, np.float64), 0.0, 1.0) * (len(_CMAP_ANCHORS) - 1)
  i0 = np.minimum(np.floor(v).astype(int), len(_CMAP_ANCHORS) - 2)
  t = (v - i0)[..., None]
  rgb = _CMAP_ANCHORS[i0] * (1 - t) + _CMAP_ANCHORS[i0 + 1] * t
  return np.round(rgb).astype(np.uint8)


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow without sized default fonts
    return ImageFont.load_default()


def _text_size(draw, text, font):
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def render_heatmap(
  table,
  row_labels: Sequence[str] | None = None,
  col_labels: Sequence[str] | None = None,
  title: str | None = None,
  row_title: str | None = None,
  col_title: str | None = None,
  vmin: float = 0.0,
  vmax: float | None = None,
  cell: int = 72,
  value_format: str = "{:.2f}",
) -> tuple[Image.Image, np.ndarray]:
  """Draws a labelled heatmap of ``table`` (rows, cols); returns (image, cell boxes).

  Cells are ``cell`` pixels high and at least that wide (wider when a column label needs it).
  Cell (i, j) is filled with ``colormap((table[i, j] − vmin) / (vmax − vmin))`` (vmax defaults
  to the table's max) and annotated with its value; a colour bar shows the scale. The boxes
  array (rows, cols, 4) holds each cell's (x0, y0, x1, y1) in pixels (x1, y1 exclusive).
  """
  t = np.asarray(table, np.float64)
  if t.ndim != 2 or t.size == 0:
    raise ValueError(f"table must be a non-empty 2-D array, got shape {t.shape}")
  rows, cols = t.shape
  row_labels = [str(s) for s in (row_labels if row_labels is not None else range(rows))]
  col_labels = [str(s) for s in (col_labels if col_labels is not None else range(cols))]
  if len(row_labels) != rows or len(col_labels) != cols:
    raise ValueError("need one label per row and per column")
  finite = t[np.isfinite(t)]
  if vmax is None:
    vmax = float(finite.max()) if finite.size else 1.0
  if vmax <= vmin:
    vmax = vmin + 1.0

  font, small = _font(max(10, cell // 5)), _font(max(9, cell // 6))
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  pad = 10
  label_w = max(_text_size(probe, s, font)[0] for s in row_labels)
  label_h = max(_text_size(probe, s, font)[1] for s in col_labels)
  cell_w = max(cell, max(_text_size(probe, s, font)[0] for s in col_labels) + pad)
  line_h = _text_size(probe, "Ag", font)[1]
  left = pad + (line_h + pad if row_title else 0) + label_w + pad
  top = pad + (line_h + pad if title else 0) + (line_h + pad if col_title else 0) + label_h + pad
  bar_w, bar_gap = max(12, cell // 4), pad * 2
  scale_w = max(_text_size(probe, value_format.format(v), small)[0] for v in (vmin, vmax))
  width = left + cols * cell_w + bar_gap + bar_w + pad + scale_w + pad
  height = top + rows * cell + pad

  img = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(img)
  y = pad
  if title:
    tw, _ = _text_size(draw, title, font)
    draw.text(((width - tw) // 2, y), title, fill="black", font=font)
    y += line_h + pad
  if col_title:
    tw, _ = _text_size(draw, col_title, font)
    draw.text((left + (cols * cell_w - tw) // 2, y), col_title, fill="black", font=font)
  if row_title:  # rotated caption along the left edge
    tw, th = _text_size(draw, row_title, font)
    cap = Image.new("RGB", (tw + 4, th + 6), "white")
    ImageDraw.Draw(cap).text((2, 0), row_title, fill="black", font=font)
    cap = cap.rotate(90, expand=True)
    img.paste(cap, (pad, top + max(0, (rows * cell - cap.height) // 2)))

  boxes = np.zeros((rows, cols, 4), np.int64)
  norm = (t - vmin) / (vmax - vmin)
  colours = colormap(np.where(np.isfinite(norm), norm, 0.0))
  for j, lab in enumerate(col_labels):
    tw, th = _text_size(draw, lab, font)
    draw.text(
      (left + j * cell_w + (cell_w - tw) // 2, top - pad - th), lab, fill="black", font=font
    )
  for i, lab in enumerate(row_labels):
    tw, th = _text_size(draw, lab, font)
    draw.text((left - pad - tw, top + i * cell + (cell - th) // 2), lab, fill="black", font=font)
    for j in range(cols):
      x0, y0 = left + j * cell_w, top + i * cell
      boxes[i, j] = (x0, y0, x0 + cell_w, y0 + cell)
      colour = tuple(int(c) for c in colours[i, j]) if np.isfinite(t[i, j]) else (200, 200, 200)
      draw.rectangle((x0, y0, x0 + cell_w - 1, y0 + cell - 1), fill=colour)
      text = value_format.format(t[i, j]) if np.isfinite(t[i, j]) else "n/a"
      luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
      tw, th = _text_size(draw, text, small)
      draw.text(
        (x0 + (cell_w - tw) // 2, y0 + (cell - th) // 2),
        text,
        fill="black" if luminance > 140 else "white",
        font=small,
      )
  # Colour bar, vmax at the top.
  bx0 = left + cols * cell_w + bar_gap
  bar_h = rows * cell
  ramp = colormap(np.linspace(1.0, 0.0, bar_h))
  img.paste(Image.fromarray(np.repeat(ramp[:, None, :], bar_w, axis=1)), (bx0, top))
  draw.rectangle((bx0, top, bx0 + bar_w - 1, top + bar_h - 1), outline="black")
  draw.text((bx0 + bar_w + 4, top), value_format.format(vmax), fill="black", font=small)
  _, th = _text_size(draw, value_format.format(vmin), small)
  draw.text(
    (bx0 + bar_w + 4, top + bar_h - th - 4), value_format.format(vmin), fill="black", font=small
  )
  return img, boxes


def write_heatmap_png(
  path: str | os.PathLike, table, row_labels=None, col_labels=None, **kwargs
) -> np.ndarray:
  """Writes :func:`render_heatmap` of ``table`` to a PNG file; returns the cell boxes.

  For Fig. 5: ``table[m][m′]`` = mean entropy of C_m on codes z_m′, rows = classifiers,
  columns = codes, e.g. ``vmax=max(log|m|)``.
  """
  img, boxes = render_heatmap(table, row_labels, col_labels, **kwargs)
  img.save(os.fspath(path), format="PNG")
  return boxes

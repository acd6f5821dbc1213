"""The evaluator's pictures (PIL only): scatter panels and the embedding grid (Fig. 4), the
entropy matrix (Fig. 5), and the image grids of expression synthesis and of transfers."""

from __future__ import annotations

import colorsys
import math
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attrdis import cluster_metrics
from attrdis import images as images_lib

_TAB10 = [
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (140, 86, 75),
  (227, 119, 194),
  (127, 127, 127),
  (188, 189, 34),
  (23, 190, 207),
]


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
  """Distinct colours: tab10 up to 10 classes, else evenly spaced hues."""
  if num_classes <= len(_TAB10):
    return _TAB10[:num_classes]
  return [
    tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(i / num_classes, 0.8, 0.85))
    for i in range(num_classes)
  ]


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
    draw.ellipse(
      (x - radius, y - radius, x + radius, y + radius), fill=colours[int(labels[i]) % len(colours)]
    )
  draw.rectangle((0, 0, size - 1, size - 1), outline=(160, 160, 160))
  return img


def _font(size: int = 12):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:
    return ImageFont.load_default()


def write_embedding_png(
  path: str,
  embeddings: Mapping[str, np.ndarray],
  labels: Mapping[str, np.ndarray],
  class_names: Mapping[str, Sequence[str]],
  panel: int = 180,
  title: str = "",
) -> tuple[int, int]:
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
    draw.text(
      (left + j * (panel + pad), top - head + 4), f"coloured by {c}", fill="black", font=font
    )
  for i, r in enumerate(rows):
    y0 = top + i * (panel + pad)
    draw.text((pad, y0 + panel // 2 - 6), str(r), fill="black", font=font)
    for j, c in enumerate(cols):
      img.paste(
        scatter_panel(embeddings[r], rank[c], colours[c], panel), (left + j * (panel + pad), y0)
      )
  y_leg = top + len(rows) * (panel + pad)
  for j, c in enumerate(cols):
    names = [class_names[c][int(q)] for q in present[c]]
    for q, name in enumerate(names[:12]):
      x, y = left + j * (panel + pad), y_leg + 14 * q
      draw.rectangle((x, y + 2, x + 9, y + 11), fill=colours[c][q])
      draw.text((x + 14, y), name, fill="black", font=font)
    if len(names) > 12:
      draw.text(
        (left + j * (panel + pad) + 14, y_leg + 14 * 12),
        f"... {len(names)} classes",
        fill="black",
        font=font,
      )
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return img.size


def write_entropy_png(
  path: str,
  entropy,
  attributes: Sequence[str],
  code_names: Sequence[str],
  num_classes: Sequence[int],
  step: int,
) -> None:
  """Fig. 5: the (M, M+1) matrix of mean entropies of C_m(z_k), classifiers down, codes
  across, on a scale up to the largest log|m|."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cluster_metrics.write_heatmap_png(
    path,
    entropy,
    [f"C_{a}" for a in attributes],
    [f"z_{z}" for z in code_names],
    title=f"mean entropy of C_m(z_k), step {step}",
    row_title="classifier",
    col_title="code",
    vmax=max(math.log(n) for n in num_classes),
  )


def write_synthesis_png(path: str, sources, translated: Sequence[np.ndarray]) -> None:
  """One row per source image (float, [-1, 1]): the source, then its translation to each
  target class (``translated[c]`` (rows, S, S, 3), one entry per class)."""
  grid = np.concatenate([np.asarray(sources)[:, None], np.stack(translated, axis=1)], axis=1)
  images_lib.save_png(images_lib.make_grid(grid), path)


def transfer_row(source, target, transfer, truth) -> np.ndarray:
  """One row of the transfer grid: (source, target, transfer, true rendering) for each pair
  given, side by side, (1, 4 * pairs, S, S, 3)."""
  return np.stack([source, target, transfer, truth], axis=1).reshape(
    (1, 4 * len(source)) + np.shape(transfer)[1:]
  )


def write_transfer_png(path: str, rows: Sequence[np.ndarray]) -> None:
  """The rows of :func:`transfer_row`, one under the other."""
  images_lib.save_png(images_lib.make_grid(np.concatenate(rows, axis=0)), path)

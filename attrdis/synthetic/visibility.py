"""How visible an expression is: the share of pixels an expression-only change moves.

    changed_fraction(image_size, expression, intensity) -> float

renders ``num_faces`` random faces (random identities, illuminations, gazes and colour casts,
drawn from ``seed``) once neutral and once with ``expression`` at ``intensity``, everything
else the same, and returns the fraction of pixels whose value changes by more than
``threshold`` (in [0, 1] pixel units) in at least one channel. ``visibility_table`` gives it
for every expression and intensity level; ``python -m attrdis.synthetic.benchmark`` prints it.
"""

from __future__ import annotations

import numpy as np

from attrdis.synthetic import render as render_lib
from attrdis.synthetic.factors import (
  COLORS,
  EXPRESSIONS,
  GAZES,
  ILLUMINATIONS,
  FactorBatch,
  NUM_IDENTITY_PARAMS,
)

THRESHOLD = 0.1


def random_faces(num_faces: int, seed: int = 0) -> FactorBatch:
  """``num_faces`` neutral faces with random identities and scene factors."""
  rng = np.random.default_rng(seed)
  return FactorBatch(
    identity=rng.random((num_faces, NUM_IDENTITY_PARAMS)).astype(np.float32),
    expression=np.zeros(num_faces, np.int32),
    intensity=np.zeros(num_faces, np.float32),
    illumination=rng.integers(0, len(ILLUMINATIONS), num_faces).astype(np.int32),
    gaze=rng.integers(0, len(GAZES), num_faces).astype(np.int32),
    color=rng.integers(0, len(COLORS), num_faces).astype(np.int32),
  )


def with_expression(faces: FactorBatch, expression: int, intensity: float) -> FactorBatch:
  n = len(faces)
  return FactorBatch(
    identity=faces.identity,
    expression=np.full(n, expression, np.int32),
    intensity=np.full(n, intensity, np.float32),
    illumination=faces.illumination,
    gaze=faces.gaze,
    color=faces.color,
  )


def changed_fraction(
  image_size: int,
  expression: int | str,
  intensity: float,
  num_faces: int = 64,
  seed: int = 0,
  threshold: float = THRESHOLD,
) -> float:
  """Mean over faces of the fraction of pixels that move by more than ``threshold``."""
  if isinstance(expression, str):
    expression = EXPRESSIONS.index(expression)
  faces = random_faces(num_faces, seed)
  neutral = render_lib.render_batch(faces, image_size).astype(np.float32) / 255.0
  moved = (
    render_lib.render_batch(with_expression(faces, expression, intensity), image_size).astype(
      np.float32
    )
    / 255.0
  )
  changed = np.max(np.abs(moved - neutral), axis=-1) > threshold
  return float(changed.mean())


def visibility_table(
  image_size: int, intensities=(0.25, 0.5, 0.75, 1.0), num_faces: int = 64, seed: int = 0
) -> dict[str, list[float]]:
  """{expression: [changed fraction at each intensity]} for every non-neutral expression."""
  return {
    name: [changed_fraction(image_size, e, t, num_faces, seed) for t in intensities]
    for e, name in enumerate(EXPRESSIONS)
    if e
  }

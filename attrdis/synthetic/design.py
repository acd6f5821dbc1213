"""Which faces the ``synthetic_faces`` dataset holds (shared by the TFDS builder, the
contact sheet and the benchmark).

Identities are numbered ``0 .. num_train + num_test - 1``; the first ``num_train`` are the
train split, the rest the test split (so the splits' identities are disjoint).  Identity
``i`` has the parameters ``identity_params([seed, i])``.

Each identity gets ``len(EXPRESSIONS) * intensity_levels * repeats`` images: every
expression at every intensity level ``l / intensity_levels`` (neutral: intensity 0, as many
images as each other expression), each ``repeats`` times.  Illumination, gaze and colour
cast are dealt to an identity's images in balanced proportions (each class equally often,
up to a remainder that rotates with the identity) and in a seeded random order, so every
factor varies independently of the others and the labels are balanced.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from attrdis.synthetic.factors import (
  COLORS,
  EXPRESSIONS,
  GAZES,
  ILLUMINATIONS,
  Factors,
  identity_params,
)


@dataclasses.dataclass(frozen=True)
class Design:
  num_train_identities: int
  num_test_identities: int
  intensity_levels: int
  repeats: int
  seed: int = 0

  def intensities(self) -> tuple[float, ...]:
    """The intensity levels of the non-neutral expressions: l / L for l = 1..L
    (float32 values)."""
    L = self.intensity_levels
    return tuple(float(np.float32(l / L)) for l in range(1, L + 1))

  @property
  def num_identities(self) -> int:
    return self.num_train_identities + self.num_test_identities

  @property
  def images_per_identity(self) -> int:
    return len(EXPRESSIONS) * self.intensity_levels * self.repeats

  def num_images(self, split: str) -> int:
    return len(self.identities(split)) * self.images_per_identity

  def identities(self, split: str) -> range:
    if split == "train":
      return range(0, self.num_train_identities)
    if split == "test":
      return range(self.num_train_identities, self.num_identities)
    raise ValueError(f"unknown split {split!r}")

  def identity_names(self) -> list[str]:
    return [identity_name(i) for i in range(self.num_identities)]

  def identity(self, index: int) -> np.ndarray:
    return identity_params([self.seed, index])

  def examples_of(self, index: int) -> list[tuple[str, int, Factors]]:
    """(key, identity index, factors) of every image of identity ``index``."""
    ident = self.identity(index)
    n = self.images_per_identity
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, index, 1]))
    k = np.arange(n) + index  # rotate the remainder between identities

    def deal(num_classes: int) -> np.ndarray:
      return rng.permutation(k % num_classes)

    illum, gaze, color = deal(len(ILLUMINATIONS)), deal(len(GAZES)), deal(len(COLORS))
    out = []
    j = 0
    for e in range(len(EXPRESSIONS)):
      for level in self.intensities():
        intensity = 0.0 if e == 0 else level
        for _ in range(self.repeats):
          f = Factors(ident, e, intensity, int(illum[j]), int(gaze[j]), int(color[j]))
          out.append((f"{index:04d}-{j:03d}", index, f))
          j += 1
    return out

  def examples(self, split: str) -> Iterator[tuple[str, int, Factors]]:
    for index in self.identities(split):
      yield from self.examples_of(index)


def identity_name(index: int) -> str:
  return f"id{index:04d}"


# The builder configs of ``synthetic_faces``: name -> (image size, design).  The first is
# the default.  32px, 64px and 128px hold the same faces at different sizes.
CONFIGS: dict[str, tuple[int, Design]] = {
  "64px": (
    64,
    Design(num_train_identities=100, num_test_identities=20, intensity_levels=4, repeats=2),
  ),
  "32px": (
    32,
    Design(num_train_identities=100, num_test_identities=20, intensity_levels=4, repeats=2),
  ),
  "128px": (
    128,
    Design(num_train_identities=100, num_test_identities=20, intensity_levels=4, repeats=2),
  ),
  "tiny": (
    16,
    Design(num_train_identities=4, num_test_identities=2, intensity_levels=2, repeats=1),
  ),
}
DEFAULT_CONFIG = "64px"

"""Factors of variation of the synthetic faces, and their class names.

A face is fully described by a :class:`Factors`:

* ``identity`` -- a float32 vector of ``NUM_IDENTITY_PARAMS`` numbers in [0, 1]
  (see ``IDENTITY_PARAM_NAMES``); :func:`identity_params` draws one from a seed.
  Every entry is continuous, so identities differ in many ways and in none
  categorically.
* ``expression`` -- an index into ``EXPRESSIONS`` and ``intensity`` in [0, 1]
  (the deformation scales linearly with it; neutral always has intensity 0).
* ``illumination`` -- an index into ``ILLUMINATIONS`` (light direction as seen in
  the image: ``left`` lights the image's left side).
* ``gaze`` -- an index into ``GAZES`` (``left`` looks toward the image's left).
* ``color`` -- an index into ``COLORS``: a colour cast over the whole image.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

EXPRESSIONS = ("neutral", "smile", "surprise", "anger", "sadness")
ILLUMINATIONS = ("front", "left", "right", "top", "bottom")
GAZES = ("left", "centre", "right")
COLORS = ("none", "red", "green", "blue")

# The categorical attributes, in the order the transfer code knows them.
ATTRIBUTES = ("identity", "expression", "illumination", "gaze", "color")
CLASS_NAMES = {
  "expression": EXPRESSIONS,
  "illumination": ILLUMINATIONS,
  "gaze": GAZES,
  "color": COLORS,
}

IDENTITY_PARAM_NAMES = (
  "face_size",  # half height of the face in the image
  "face_width",  # width / height ratio
  "face_square",  # superellipse exponent: round .. squarish
  "jaw",  # taper of the lower face: broad .. pointed chin
  "skin_tone",  # dark .. light
  "skin_warmth",  # olive .. rosy
  "hair_tone",  # black .. blond
  "hair_red",  # amount of auburn / red
  "hair_length",  # short (above the ears) .. long (below the chin)
  "hair_volume",  # flat .. voluminous
  "hairline",  # high forehead .. low fringe
  "hair_part",  # tilt of the hairline (side parting)
  "eye_color",  # brown .. hazel .. green .. blue .. grey
  "eye_size",
  "eye_spacing",
  "eye_height",
  "brow_thickness",
  "brow_height",
  "nose_length",
  "nose_width",
  "mouth_width",
  "mouth_height",
  "lip_color",
  "ear_size",
  "shirt_hue",
)
NUM_IDENTITY_PARAMS = len(IDENTITY_PARAM_NAMES)


def identity_params(seed: int | Sequence[int]) -> np.ndarray:
  """The identity vector drawn from ``seed`` (an int or a sequence of ints).

  Deterministic: the same seed always gives the same float32 vector in [0, 1).
  """
  entropy = [int(s) for s in np.atleast_1d(np.asarray(seed, dtype=np.int64))]
  rng = np.random.default_rng(np.random.SeedSequence(entropy))
  return rng.random(NUM_IDENTITY_PARAMS).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Factors:
  """Everything needed to render one face."""

  identity: np.ndarray
  expression: int = 0
  intensity: float = 0.0
  illumination: int = 0
  gaze: int = 1
  color: int = 0

  def __post_init__(self):
    ident = np.asarray(self.identity, dtype=np.float32).reshape(-1)
    if ident.shape != (NUM_IDENTITY_PARAMS,):
      raise ValueError(f"identity must have {NUM_IDENTITY_PARAMS} parameters, got {ident.shape}")
    object.__setattr__(self, "identity", ident)
    object.__setattr__(self, "expression", _index(self.expression, EXPRESSIONS))
    object.__setattr__(self, "illumination", _index(self.illumination, ILLUMINATIONS))
    object.__setattr__(self, "gaze", _index(self.gaze, GAZES))
    object.__setattr__(self, "color", _index(self.color, COLORS))
    intensity = float(np.float32(self.intensity))
    if not 0.0 <= intensity <= 1.0:
      raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    if self.expression == 0:
      intensity = 0.0  # neutral has no deformation to scale
    object.__setattr__(self, "intensity", intensity)

  def replace(self, **changes: Any) -> "Factors":
    return dataclasses.replace(self, **changes)

  def __eq__(self, other):
    if not isinstance(other, Factors):
      return NotImplemented
    return np.array_equal(self.identity, other.identity) and (
      self.expression,
      self.intensity,
      self.illumination,
      self.gaze,
      self.color,
    ) == (other.expression, other.intensity, other.illumination, other.gaze, other.color)

  __hash__ = None  # mutable-array field: not hashable


def _index(value, names: Sequence[str]) -> int:
  if isinstance(value, str):
    if value not in names:
      raise ValueError(f"{value!r} is not one of {names}")
    return names.index(value)
  value = int(value)
  if not 0 <= value < len(names):
    raise ValueError(f"class index {value} out of range for {names}")
  return value


@dataclasses.dataclass(frozen=True)
class FactorBatch:
  """A batch of factors as arrays with a leading batch axis (what the renderer eats)."""

  identity: np.ndarray  # (B, NUM_IDENTITY_PARAMS) float32
  expression: np.ndarray  # (B,) int32
  intensity: np.ndarray  # (B,) float32
  illumination: np.ndarray  # (B,) int32
  gaze: np.ndarray  # (B,) int32
  color: np.ndarray  # (B,) int32

  def __len__(self):
    return len(self.expression)

  def __getitem__(self, i: int) -> Factors:
    return Factors(
      self.identity[i],
      int(self.expression[i]),
      float(self.intensity[i]),
      int(self.illumination[i]),
      int(self.gaze[i]),
      int(self.color[i]),
    )


def stack(factors: Iterable[Factors] | Factors | FactorBatch) -> FactorBatch:
  """A :class:`FactorBatch` from one or many :class:`Factors`."""
  if isinstance(factors, FactorBatch):
    return factors
  if isinstance(factors, Factors):
    factors = [factors]
  factors = list(factors)
  if not factors:
    raise ValueError("empty list of factors")
  return FactorBatch(
    identity=np.stack([f.identity for f in factors]).astype(np.float32),
    expression=np.array([f.expression for f in factors], np.int32),
    intensity=np.array([f.intensity for f in factors], np.float32),
    illumination=np.array([f.illumination for f in factors], np.int32),
    gaze=np.array([f.gaze for f in factors], np.int32),
    color=np.array([f.color for f in factors], np.int32),
  )


def factors_from_record(record: Mapping[str, Any]) -> Factors:
  """The factors of a ``synthetic_faces`` record (the dict a TFDS data source returns).

  Uses the stored ``identity_params`` vector, the class labels and ``intensity``;
  other keys (the image...) are ignored.
  """
  return Factors(
    identity=np.asarray(record["identity_params"], np.float32),
    expression=int(record["expression"]),
    intensity=float(np.float32(record["intensity"])),
    illumination=int(record["illumination"]),
    gaze=int(record["gaze"]),
    color=int(record["color"]),
  )


def transfer_factors(source: Factors, target: Factors, attributes: Iterable[str]) -> Factors:
  """``source`` with the attributes named in ``attributes`` taken from ``target``.

  ``expression`` takes the expression and its intensity together.
  """
  changes = {}
  for name in attributes:
    if name not in ATTRIBUTES:
      raise ValueError(f"unknown attribute {name!r}; expected some of {ATTRIBUTES}")
    changes[name] = getattr(target, name)
    if name == "expression":
      changes["intensity"] = target.intensity
  return dataclasses.replace(source, **changes)

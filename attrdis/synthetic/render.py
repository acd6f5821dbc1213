"""A vectorised, deterministic renderer of frontal cartoon faces.

Every shape is an implicit function ``f`` evaluated on the pixel grid of a whole batch at
once (negative inside).  Its antialiased coverage is ``clip(0.5 - f / |grad f|, 0, 1)``
where the gradient is taken per pixel by finite differences, i.e. ``f / |grad f|`` is
the signed distance to the edge in pixels.  Layers are composited back to front; the skin,
hair and clothes are shaded with a Lambertian model over height fields (an ellipsoid for
the face with bumps for the nose and cheeks, another for the hair, a cylinder for the
neck), so that the light direction shows as shading over the face's shape.

Coordinates: image x to the right and y downwards, both in [-1, 1]; the face is drawn in
*face units*, ``(x - centre) / face_half_height``.  Expression deformations are additive
in face units and do not depend on the identity (see :func:`landmarks`).

Public API:
  render(factors, image_size=64) -> (S, S, 3) uint8
  render_batch(factors, image_size=64) -> (B, S, S, 3) uint8
  render_layers(factors, image_size=64) -> (images, {mask name: (B, S, S) float32})
  landmarks(factors) -> {name: (B, 2) float32 in face units} (+ face_centre, face_scale)
  transfer_ground_truth(source, target, attributes, image_size=64) -> (S, S, 3) uint8
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from attrdis.synthetic.factors import (  # noqa: F401  (re-exported)
  ATTRIBUTES,
  COLORS,
  EXPRESSIONS,
  GAZES,
  IDENTITY_PARAM_NAMES,
  ILLUMINATIONS,
  NUM_IDENTITY_PARAMS,
  FactorBatch,
  Factors,
  factors_from_record,
  identity_params,
  stack,
  transfer_factors,
)

MIN_SIZE, MAX_SIZE = 16, 256
F32 = np.float32
# The face's half height (image units, 1 = half the image) ranges over [_SCALE_MIN, _SCALE_MAX];
# its centre is at (0, _CY).
_SCALE_MIN, _SCALE_MAX, _CY = 0.78, 0.86, 0.08

# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------

# Expression deformations at intensity 1 (face units; y grows downwards).  Columns:
_EXPR_COLS = (
  "corner_dy",
  "corner_dx",
  "open",
  "top_frac",
  "square",
  "teeth",
  "brow_inner_dy",
  "brow_outer_dy",
  "eye_open",
  "lid_slant",
  "cheek",
)
# Columns scaled by the intensity (the others describe a shape, not an amount).
_EXPR_SCALED = (
  "corner_dy",
  "corner_dx",
  "open",
  "brow_inner_dy",
  "brow_outer_dy",
  "eye_open",
  "lid_slant",
  "cheek",
)
_EXPR_TABLE = np.array(
  [
    # cdy    cdx    open  top   sq   teeth  b_in   b_out  eye    lid   cheek
    [0.00, 0.00, 0.00, 0.50, 0.0, 0.00, 0.00, 0.00, 0.00, 0.00, 0.0],  # neutral
    [-0.20, 0.10, 0.22, 0.15, 0.3, 0.80, -0.03, -0.03, -0.35, 0.00, 1.0],  # smile
    [0.02, -0.10, 0.42, 0.40, 0.0, 0.00, -0.22, -0.20, 0.70, 0.00, 0.0],  # surprise
    [0.06, 0.04, 0.30, 0.45, 1.0, 0.70, 0.22, -0.08, -0.35, 0.80, 0.2],  # anger
    [0.30, -0.08, 0.20, 0.80, 0.0, 0.00, -0.24, 0.10, -0.45, -0.80, 0.0],  # sadness
  ],
  dtype=F32,
)
assert _EXPR_TABLE.shape == (len(EXPRESSIONS), len(_EXPR_COLS))

# Light directions (x right, y down, z towards the viewer), unit length.
_LIGHTS = np.array(
  [
    [0.0, 0.0, 1.0],  # front
    [-0.8, -0.1, 0.59],  # left (lights the image's left side)
    [0.8, -0.1, 0.59],  # right
    [0.0, -0.72, 0.7],  # top
    [0.0, 0.75, 0.66],  # bottom
  ],
  dtype=F32,
)
_LIGHTS /= np.linalg.norm(_LIGHTS, axis=1, keepdims=True)
_AMBIENT, _DIFFUSE, _WRAP = F32(0.22), F32(0.88), F32(0.3)

# Per-channel gains of the colour casts.
_CASTS = np.array(
  [
    [1.0, 1.0, 1.0],  # none
    [1.12, 0.80, 0.78],  # red
    [0.80, 1.08, 0.80],  # green
    [0.78, 0.86, 1.15],  # blue
  ],
  dtype=F32,
)

_GAZE_DX = np.array([-1.0, 0.0, 1.0], dtype=F32)

_SKIN = np.array(
  [
    [0.42, 0.27, 0.18],
    [0.60, 0.41, 0.28],
    [0.76, 0.56, 0.42],
    [0.92, 0.75, 0.62],
    [0.99, 0.86, 0.77],
  ],
  F32,
)
_HAIR = np.array(
  [
    [0.07, 0.06, 0.06],
    [0.24, 0.15, 0.09],
    [0.44, 0.29, 0.16],
    [0.66, 0.50, 0.30],
    [0.92, 0.80, 0.52],
  ],
  F32,
)
_AUBURN = np.array([0.66, 0.25, 0.10], F32)
_IRIS = np.array(
  [
    [0.33, 0.19, 0.08],
    [0.52, 0.40, 0.16],
    [0.24, 0.50, 0.27],
    [0.22, 0.44, 0.80],
    [0.52, 0.57, 0.63],
  ],
  F32,
)
_BACKGROUND = np.array([0.80, 0.82, 0.86], F32)
_LIP_RED = np.array([0.78, 0.22, 0.27], F32)
_MOUTH_INSIDE = np.array([0.30, 0.05, 0.08], F32)
_TEETH = np.array([0.97, 0.96, 0.92], F32)
_SCLERA = np.array([0.98, 0.98, 0.97], F32)
_LINE = np.array([0.12, 0.07, 0.06], F32)
_PUPIL = np.array([0.03, 0.02, 0.02], F32)
_BLUSH = np.array([0.95, 0.42, 0.45], F32)
_SHIRTS = np.array(
  [
    [0.20, 0.45, 0.50],
    [0.22, 0.30, 0.62],
    [0.45, 0.25, 0.55],
    [0.62, 0.22, 0.30],
    [0.55, 0.50, 0.22],
    [0.25, 0.52, 0.28],
    [0.35, 0.35, 0.38],
  ],
  F32,
)


def _palette(t: np.ndarray, stops: np.ndarray) -> np.ndarray:
  """Piecewise-linear colour ramp: t (B,) in [0, 1] -> (B, 3)."""
  pos = np.clip(t, 0.0, 1.0) * (len(stops) - 1)
  i = np.minimum(pos.astype(np.int32), len(stops) - 2)
  frac = (pos - i)[:, None]
  return (stops[i] * (1 - frac) + stops[i + 1] * frac).astype(F32)


# --------------------------------------------------------------------------------------
# Decoding factors into geometry and colours
# --------------------------------------------------------------------------------------


def _decode(batch: FactorBatch) -> dict[str, np.ndarray]:
  """Physical parameters, each (B,) (or (B, 3) for colours), face units unless noted."""
  p = np.clip(np.asarray(batch.identity, F32), 0.0, 1.0)
  q = {name: p[:, i] for i, name in enumerate(IDENTITY_PARAM_NAMES)}
  intensity = np.clip(np.asarray(batch.intensity, F32), 0.0, 1.0)
  expr = np.asarray(batch.expression, np.int64)
  intensity = np.where(expr == 0, F32(0), intensity)
  table = _EXPR_TABLE[expr]
  e = {}
  for j, name in enumerate(_EXPR_COLS):
    e[name] = table[:, j] * intensity if name in _EXPR_SCALED else table[:, j]

  d: dict[str, np.ndarray] = {}
  # Face (scale in image units; the rest in face units).
  d["scale"] = _SCALE_MIN + (_SCALE_MAX - _SCALE_MIN) * q["face_size"]
  d["cx"] = np.zeros_like(d["scale"])
  d["cy"] = np.full_like(d["scale"], _CY)
  d["w"] = 0.72 + 0.14 * q["face_width"]
  d["face_square"] = 0.85 * q["face_square"]  # blend of round and squircle outlines
  d["jaw"] = 0.06 + 0.32 * q["jaw"]
  # Skin and hair.
  skin = _palette(q["skin_tone"], _SKIN)
  warm = (q["skin_warmth"] - 0.5)[:, None]
  skin = skin * (1 + warm * np.array([0.12, -0.02, -0.18], F32))
  d["skin"] = np.clip(skin, 0, 1).astype(F32)
  hair = _palette(q["hair_tone"], _HAIR)
  red = (q["hair_red"] * q["hair_red"] * 0.75)[:, None]
  d["hair"] = (hair * (1 - red) + _AUBURN * red).astype(F32)
  d["hair_len"] = -0.25 + 1.55 * q["hair_length"]  # y where the hair ends
  d["hair_ax"] = d["w"] * (1.10 + 0.22 * q["hair_volume"])
  d["hair_ay"] = 1.06 + 0.14 * q["hair_volume"]
  d["hair_cy"] = np.full_like(d["w"], -0.08)
  d["ear"] = 0.85 + 0.4 * q["ear_size"]
  d["shirt"] = _palette(q["shirt_hue"], _SHIRTS)
  # Eyes.
  d["eye_color"] = _palette(q["eye_color"], _IRIS)
  d["ew"] = 0.14 + 0.05 * q["eye_size"]
  d["ex"] = 0.30 + 0.09 * q["eye_spacing"]
  d["ey"] = -0.17 + 0.12 * q["eye_height"]
  d["eh0"] = 0.62 * d["ew"]
  d["eh"] = d["eh0"] * np.maximum(1.0 + e["eye_open"], 0.1)
  d["lid_slant"] = e["lid_slant"]
  d["gaze_dx"] = _GAZE_DX[np.asarray(batch.gaze, np.int64)] * 0.5 * d["ew"]
  # Brows (centre line at the inner and outer ends).
  d["brow_th"] = 0.045 + 0.035 * q["brow_thickness"]
  base = d["ey"] - d["eh0"] - (0.07 + 0.08 * q["brow_height"])
  d["brow_inner_y"] = base + e["brow_inner_dy"]
  d["brow_outer_y"] = base + 0.01 + e["brow_outer_dy"]
  d["brow_inner_x"] = d["ex"] - 0.85 * d["ew"]
  d["brow_outer_x"] = d["ex"] + 1.2 * d["ew"]
  d["brow_color"] = (d["hair"] * 0.65).astype(F32)
  # The hairline stays above the (neutral) brows.
  d["hairline"] = base - 0.28 - 0.22 * (1 - q["hairline"])
  d["hair_tilt"] = (q["hair_part"] - 0.5) * 0.16
  # Nose.
  d["nose_y"] = 0.10 + 0.16 * q["nose_length"]
  d["nose_w"] = 0.055 + 0.05 * q["nose_width"]
  # Mouth (additive deformations: corners at (+-mw, my + corner_dy)).
  d["mw0"] = 0.24 + 0.08 * q["mouth_width"]
  d["mw"] = d["mw0"] + e["corner_dx"]
  d["my"] = d["nose_y"] + 0.17 + 0.10 * q["mouth_height"]
  d["corner_dy"] = e["corner_dy"]
  d["open"] = e["open"]
  d["top_frac"] = e["top_frac"]
  d["square"] = e["square"]
  d["teeth"] = e["teeth"]
  d["cheek"] = e["cheek"]
  lip_mix = (0.30 + 0.40 * q["lip_color"])[:, None]
  d["lip"] = (d["skin"] * (1 - lip_mix) + _LIP_RED * lip_mix).astype(F32)
  # Scene.
  d["light"] = _LIGHTS[np.asarray(batch.illumination, np.int64)]
  d["cast"] = _CASTS[np.asarray(batch.color, np.int64)]
  return d


def landmarks(factors) -> dict[str, np.ndarray]:
  """Landmarks of the face in face units, each (B, 2) as (x, y).

  Face units: image coordinates (in [-1, 1], y down) minus ``face_centre``, divided by
  ``face_scale`` (both also returned, in image units).  The renderer draws with exactly
  these parameters.
  """
  d = _decode(stack(factors))
  pt = lambda x, y: np.stack(
    [np.broadcast_to(x, d["w"].shape), np.broadcast_to(y, d["w"].shape)], -1
  ).astype(F32)
  corner_y = d["my"] + d["corner_dy"]
  out = {
    "mouth_left": pt(-d["mw"], corner_y),
    "mouth_right": pt(d["mw"], corner_y),
    "mouth_top": pt(0.0, d["my"] - d["open"] * d["top_frac"]),
    "mouth_bottom": pt(0.0, d["my"] + d["open"] * (1 - d["top_frac"])),
    "brow_inner_left": pt(-d["brow_inner_x"], d["brow_inner_y"]),
    "brow_inner_right": pt(d["brow_inner_x"], d["brow_inner_y"]),
    "brow_outer_left": pt(-d["brow_outer_x"], d["brow_outer_y"]),
    "brow_outer_right": pt(d["brow_outer_x"], d["brow_outer_y"]),
    "eye_top_left": pt(-d["ex"], d["ey"] - d["eh"]),
    "eye_top_right": pt(d["ex"], d["ey"] - d["eh"]),
    "eye_bottom_left": pt(-d["ex"], d["ey"] + d["eh"]),
    "eye_bottom_right": pt(d["ex"], d["ey"] + d["eh"]),
    "iris_left": pt(-d["ex"] + d["gaze_dx"], d["ey"]),
    "iris_right": pt(d["ex"] + d["gaze_dx"], d["ey"]),
    "nose_tip": pt(0.0, d["nose_y"]),
    "face_centre": pt(d["cx"], d["cy"]),
    "face_scale": d["scale"].astype(F32),
  }
  return out


# --------------------------------------------------------------------------------------
# Windows: rectangles of the image evaluated with a one-pixel apron
# --------------------------------------------------------------------------------------

# Windows: conservative boxes (in face units) around everything a group of layers can
# draw, for any factors (a test checks them against full-frame rendering).
_BOXES = {  # (x_lo, x_hi, y_lo, y_hi) in face units
  "shirt": (-9.0, 9.0, 0.93, 9.0),
  "neck": (-0.36, 0.36, 0.43, 9.0),
  "hair": (-1.16, 1.16, -1.30, 1.32),
  "ears": (-1.00, 1.00, -0.24, 0.28),
  "face": (-0.88, 0.88, -1.02, 1.02),
  "brows": (-0.75, 0.75, -0.90, 0.04),
  "eyes": (-0.66, 0.66, -0.50, 0.25),
  "cheeks": (-0.66, 0.66, -0.01, 0.38),  # nose and blush
  "mouth": (-0.60, 0.60, -0.02, 0.92),  # mouth and smile lines
}


def _pixel_range(lo: float, hi: float, S: int) -> tuple[int, int]:
  """Pixel indices [a, b) covering image coordinates [lo, hi] plus a 2-pixel margin."""
  a = int(np.floor((lo + 1) * S / 2)) - 2
  b = int(np.ceil((hi + 1) * S / 2)) + 2
  return max(a, 0), min(b, S)


class _Window:
  """Face-unit coordinates X (B,1,w+2) and Y (B,h+2,1) of a window and its apron."""

  def __init__(self, S: int, box, cx, cy, scale, full: bool):
    if full:
      self.rows, self.cols = (0, S), (0, S)
    else:
      x_lo, x_hi, y_lo, y_hi = box
      ys = [_CY + s * y for s in (_SCALE_MIN, _SCALE_MAX) for y in (y_lo, y_hi)]
      xs = [s * x for s in (_SCALE_MIN, _SCALE_MAX) for x in (x_lo, x_hi)]
      self.rows = _pixel_range(min(ys), max(ys), S)
      self.cols = _pixel_range(min(xs), max(xs), S)
    (r0, r1), (c0, c1) = self.rows, self.cols
    step = F32(2.0 / S)
    yc = (np.arange(r0 - 1, r1 + 1, dtype=F32) + F32(0.5)) * step - F32(1.0)
    xc = (np.arange(c0 - 1, c1 + 1, dtype=F32) + F32(0.5)) * step - F32(1.0)
    self.X = (xc[None, None, :] - cx) / scale
    self.Y = (yc[None, :, None] - cy) / scale
    self.shape = (len(scale), r1 - r0 + 2, c1 - c0 + 2)
    self.sl = (slice(None), slice(r0, r1), slice(c0, c1))

  def inner(self, a):
    """The window without its apron."""
    return np.broadcast_to(a, self.shape)[:, 1:-1, 1:-1]

  def grad(self, f):
    """Half the inverse gradient norm of f per pixel (by central differences)."""
    f = np.broadcast_to(f, self.shape)
    gx = f[:, 1:-1, 2:] - f[:, 1:-1, :-2]
    gy = f[:, 2:, 1:-1] - f[:, :-2, 1:-1]
    g = np.sqrt(gx * gx + gy * gy)  # twice the gradient per pixel
    np.maximum(g, F32(1e-12), out=g)
    return F32(2.0) / g

  def cov(self, f, inv_g=None):
    """Antialiased coverage of {f < 0}: f over its gradient is a signed distance in
    pixels.  Pass inv_g = grad(f') to reuse the gradient of an offset copy f' of f."""
    if inv_g is None:
      inv_g = self.grad(f)
    c = F32(0.5) - self.inner(f) * inv_g
    return np.clip(c, F32(0.0), F32(1.0), out=c)


class _Canvas:
  """Channel-first albedo, a shading buffer, and optionally the silhouette."""

  def __init__(self, B: int, S: int, want_masks: bool):
    self.img = np.empty((3, B, S, S), F32)
    self.img[...] = _BACKGROUND[:, None, None, None]
    self.shade = np.empty((B, S, S), F32)
    self.silhouette = np.zeros((B, S, S), F32) if want_masks else None

  def layer(self, win: _Window, colour, alpha, shading):
    """Composite ``colour`` ((B, 3) or (3,)) with coverage ``alpha`` over the window.

    ``shading=None`` keeps the shading underneath (for features painted on the face,
    which is already shaded with the face's normals there)."""
    colour = np.asarray(colour, F32)
    for c in range(3):
      v = self.img[c][win.sl]
      v += alpha * (colour[..., c].reshape(-1, 1, 1) - v)
    if shading is not None:
      sh = self.shade[win.sl]
      sh += alpha * (shading - sh)
    if self.silhouette is not None:
      sil = self.silhouette[win.sl]
      sil += alpha * (1 - sil)


def _mask(S, B, win, a):
  out = np.zeros((B, S, S), F32)
  out[win.sl] = a
  return out


# --------------------------------------------------------------------------------------
# Shapes (exact IEEE arithmetic only: +, -, *, /, sqrt, abs, min, max -- so results do not
# depend on the batch, the window or the SIMD path)
# --------------------------------------------------------------------------------------


def _ellipse(X, Y, x0, y0, ax, ay):
  """Scaled-radius implicit ellipse: 0 on the boundary, in units of min(ax, ay)."""
  u = (X - x0) / ax
  v = (Y - y0) / ay
  return (np.sqrt(u * u + v * v) - 1) * np.minimum(ax, ay)


def _squircle_radius(u, v, k):
  """Blend of the L2 and L4 norms of (u, v): k = 0 round, k = 1 squircle."""
  u2, v2 = u * u, v * v
  r2 = np.sqrt(u2 + v2)
  r4 = np.sqrt(np.sqrt(u2 * u2 + v2 * v2))
  return r2 + k * (r4 - r2)


def _band(X, Y, x0, half_len, centre, half_th):
  """A horizontal band: |Y - centre| < half_th for |X - x0| < half_len."""
  return np.maximum(np.abs(Y - centre) - half_th, np.abs(X - x0) - half_len)


def _lambert(nx, ny, nz, light):
  """Wrapped-Lambert shading of unnormalised normals; light (B, 3)."""
  norm = np.sqrt(nx * nx + ny * ny + nz * nz)
  np.maximum(norm, F32(1e-6), out=norm)
  lx, ly, lz = (light[:, i].reshape(-1, 1, 1) for i in range(3))
  dot = (nx * lx + ny * ly + nz * lz) / norm
  return _AMBIENT + _DIFFUSE * np.maximum((dot + _WRAP) / (1 + _WRAP), F32(0.0))


def _ellipsoid_normal(X, Y, x0, y0, ax, ay, depth, bumps=(), min_z=0.0):
  """Unnormalised normal of z = depth * sqrt(1 - r^2) plus compact bumps.

  Written multiplied by sqrt(1 - r^2) so that it stays finite and turns into the
  rim's outward normal outside the ellipse (min_z keeps it facing the viewer a bit).
  A bump (x0, y0, sx, sy, h, mirrored) is h * max(1 - q, 0)^2 with q the scaled squared
  radius (mirrored: one at x0 and one at -x0).
  """
  u = (X - x0) / ax
  v = (Y - y0) / ay
  s = np.sqrt(np.maximum(1 - u * u - v * v, F32(min_z * min_z)))
  nx = depth * u / ax
  ny = depth * v / ay
  for bx0, by0, sx, sy, h, mirrored in bumps:
    # A mirrored bump is a pair at x = +-bx0.
    du = ((np.abs(X) if mirrored else X) - bx0) / sx
    dv = (Y - by0) / sy
    t = np.maximum(1 - du * du - dv * dv, F32(0.0))
    k = 4 * h * t * s
    kx = k * du / sx
    nx = nx + (np.where(X < 0, -kx, kx) if mirrored else kx)
    ny = ny + k * dv / sy
  return nx, ny, s


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _check_size(image_size: int) -> int:
  image_size = int(image_size)
  if not MIN_SIZE <= image_size <= MAX_SIZE:
    raise ValueError(f"image_size must be in [{MIN_SIZE}, {MAX_SIZE}], got {image_size}")
  return image_size


def _render(batch: FactorBatch, S: int, want_masks: bool, full: bool = False):
  d = _decode(batch)
  B = len(batch)
  col = lambda a: np.asarray(a, F32).reshape(B, 1, 1)
  cx, cy, scale = col(d["cx"]), col(d["cy"]), col(d["scale"])
  win = {name: _Window(S, box, cx, cy, scale, full) for name, box in _BOXES.items()}
  cv = _Canvas(B, S, want_masks)
  light = d["light"]
  w = col(d["w"])
  masks: dict[str, np.ndarray] = {}

  # Background, lit a little from the light's side.
  step = F32(2.0 / S)
  coords = (np.arange(S, dtype=F32) + F32(0.5)) * step - F32(1.0)
  lx, ly = col(light[:, 0]), col(light[:, 1])
  cv.shade[...] = F32(0.88) + F32(0.12) * (lx * coords[None, None, :] + ly * coords[None, :, None])

  # Shoulders and shirt.
  W = win["shirt"]
  X, Y = W.X, W.Y
  ush, vsh = X / 2.0, (Y - 1.70) / 0.75
  f_sh = (np.sqrt(ush * ush + vsh * vsh) - 1) * 0.75
  body = W.inner(_lambert(*_ellipsoid_normal(X, Y, 0.0, 1.70, 2.05, 0.8, 0.8), light))
  cv.layer(W, d["shirt"], W.cov(f_sh), body)

  # Neck (a cylinder, shadowed under the jaw).
  W = win["neck"]
  X, Y = W.X, W.Y
  nw = w * 0.40
  f_neck = np.maximum(np.abs(X) - nw, 0.45 - Y)
  u = np.clip(X / (nw * 1.05), -1, 1)
  neck = _lambert(u, np.zeros_like(u), np.sqrt(1 - u * u), light)
  neck = neck * np.clip(F32(0.75) + F32(0.25) * (Y - 0.6), 0.6, 1.0)
  cv.layer(W, d["skin"] * 0.92, W.cov(f_neck), W.inner(neck))

  # Hair behind the head: an ellipse, squarer for long hair, cut where the hair ends.
  W = win["hair"]
  X, Y = W.X, W.Y
  hax, hay, hair_cy = col(d["hair_ax"]), col(d["hair_ay"]), col(d["hair_cy"])
  hl = col(d["hair_len"])
  r_hair = _squircle_radius(X / hax, (Y - hair_cy) / hay, np.clip(hl, 0, 1))
  f_hair_round = (r_hair - 1) * hax
  hair_shade_w = _lambert(
    *_ellipsoid_normal(X, Y, 0.0, hair_cy, hax * 1.03, hay * 1.03, 0.95), light
  )
  hair_shade = np.ones((B, S, S), F32)
  hair_shade[W.sl] = W.inner(hair_shade_w)
  cov_hairback = W.cov(np.maximum(f_hair_round, Y - hl))
  cv.layer(W, d["hair"], cov_hairback, hair_shade[W.sl])
  hair_win = W

  # Ears, with their own normals turned outwards.
  W = win["ears"]
  X, Y = W.X, W.Y
  ear = col(d["ear"])
  side = np.where(X < 0, F32(-1), F32(1))
  f_ears = _ellipse(X, Y, side * w * 0.98, 0.02, 0.10 * ear, 0.17 * ear)
  enx, eny, enz = _ellipsoid_normal(X, Y, side * w * 0.98, 0.02, 0.12 * ear, 0.2 * ear, 0.5)
  cov_ears = W.cov(f_ears)
  cv.layer(
    W, d["skin"] * 0.93, cov_ears, W.inner(_lambert(enx + side * 0.5 * enz, eny, enz, light))
  )
  # what covers the hair behind the head (for the visible-hair mask)
  head_cov = np.zeros((B, S, S), F32) if want_masks else None
  if want_masks:
    head_cov[W.sl] = cov_ears

  # Face: a round-to-squircle outline with a tapering jaw, shaded as an ellipsoid with
  # bumps for the nose, the cheeks (raised by smiles) and the chin.
  W = win["face"]
  X, Y = W.X, W.Y
  taper = 1 - col(d["jaw"]) * np.clip(Y, 0, 1) ** 2
  r_face = _squircle_radius(X / (w * taper), Y, col(d["face_square"]))
  f_face = (r_face - 1) * w
  cheek = col(d["cheek"])
  cheek_y = 0.20 - 0.08 * cheek
  cheek_h = 0.03 + 0.15 * cheek
  nose_y, nose_w = col(d["nose_y"]), col(d["nose_w"])
  bumps = [
    (0.0, nose_y - 0.10, nose_w * 1.6, F32(0.24), F32(0.14), False),
    (0.42, cheek_y, F32(0.24), F32(0.2), cheek_h, True),
    (0.0, 0.78, F32(0.32), F32(0.18), F32(0.06), False),  # chin
  ]
  face_shade = np.ones((B, S, S), F32)
  face_shade[W.sl] = W.inner(
    _lambert(*_ellipsoid_normal(X, Y, 0.0, 0.0, w * 1.02, 1.02, 0.85, bumps, min_z=0.3), light)
  )
  cov_face = W.cov(f_face)
  cv.layer(W, d["skin"], cov_face, face_shade[W.sl])
  if want_masks:
    masks["face"] = _mask(S, B, W, cov_face)
  face_cov_full = np.zeros((B, S, S), F32)
  face_cov_full[W.sl] = cov_face
  if want_masks:
    hv = head_cov[W.sl]
    hv += cov_face * (1 - hv)

  # Blush of smiles and the nose.
  W = win["cheeks"]
  X, Y = W.X, W.Y
  if np.any(d["cheek"] > 0):
    bx = (np.abs(X) - 0.45) / 0.16
    by = (Y - cheek_y - 0.05) / 0.11
    t = np.maximum(1 - bx * bx - by * by, F32(0.0))
    a_blush = W.inner(cheek * F32(0.4) * t * t) * face_cov_full[W.sl]
    cv.layer(W, d["skin"] * 0.4 + _BLUSH * 0.6, a_blush, None)
  un = np.clip(X / nose_w, -1, 1)
  bend = 1 - un * un
  f_nose = _band(X, Y, 0.0, nose_w, nose_y - 0.035 * bend, 0.013 + 0.007 * bend)
  cv.layer(W, d["skin"] * 0.55, W.cov(f_nose) * F32(0.85), None)

  # Mouth: lips, the opening, teeth, and smile lines at the corners.
  W = win["mouth"]
  X, Y = W.X, W.Y
  mw, my = col(d["mw"]), col(d["my"])
  corner_dy = col(d["corner_dy"])
  um = np.clip(X / mw, -1, 1)
  um2 = um * um
  centre = my + corner_dy * um2
  sq = col(d["square"])
  um_q = um2 + sq * (um2 * um2 * um2 - um2)  # |u|^2 .. |u|^6: round .. boxy opening
  prof = np.sqrt(np.maximum(1 - um_q, F32(0.0)))
  opening, top_frac = col(d["open"]), col(d["top_frac"])
  top = centre - opening * top_frac * prof
  bot = centre + opening * (1 - top_frac) * prof
  mid = (top + bot) * 0.5
  half = (bot - top) * 0.5
  lip_th = 0.018 + 0.022 * np.sqrt(np.maximum(1 - um2, F32(0.0)))
  ax_ = np.abs(X)
  f_lips = np.maximum(np.abs(Y - mid - 0.004) - (half + lip_th), ax_ - (mw + 0.02))
  f_open = np.maximum(np.abs(Y - mid) - np.maximum(half, F32(0.011)), ax_ - mw)
  cov_lips = W.cov(f_lips)
  cov_open = W.cov(f_open)
  cv.layer(W, d["lip"], cov_lips, None)
  cv.layer(W, _MOUTH_INSIDE, cov_open, None)
  if np.any(d["teeth"] * d["open"] > 0):
    teeth_h = col(d["teeth"]) * 2 * half
    f_teeth = np.maximum(np.maximum(np.abs(Y - mid) - half, ax_ - mw), Y - (top + teeth_h))
    a_teeth = W.cov(f_teeth) * np.clip(W.inner(teeth_h) / (step / scale), 0, 1)
    cv.layer(W, _TEETH, a_teeth, None)
  if want_masks:
    masks["mouth"] = _mask(S, B, W, np.maximum(cov_lips, cov_open))
    masks["mouth_open"] = _mask(S, B, W, cov_open)
  if np.any(d["cheek"] > 0):
    vl = (Y - (my + corner_dy)) / 0.07
    f_lines = np.maximum(
      np.abs(ax_ - (mw + 0.045) - 0.02 * vl * vl) - 0.008, (np.abs(vl) - 1) * 0.07
    )
    a_lines = W.cov(f_lines) * np.clip(cheek * F32(1.2), 0, 1)
    cv.layer(W, d["skin"] * 0.6, a_lines, None)

  # Eyes: outline, sclera, iris, pupil, highlight.
  W = win["eyes"]
  X, Y = W.X, W.Y
  ex, ey, ew, eh = col(d["ex"]), col(d["ey"]), col(d["ew"]), col(d["eh"])
  slant = col(d["lid_slant"])
  gx = col(d["gaze_dx"])
  side = np.where(X < 0, F32(-1), F32(1))
  x0 = side * ex
  inner = -side * (X - x0) / ew  # +1 at the inner corner, -1 at the outer one
  lid = ey - 1.05 * eh + np.abs(slant) * eh * (1 + np.sign(slant) * inner) * 0.55
  f_eye = np.maximum(_ellipse(X, Y, x0, ey, ew, eh), lid - Y)
  g_eye = W.grad(f_eye)
  cov_eye = W.cov(f_eye, g_eye)
  cv.layer(W, _LINE, W.cov(f_eye - 0.018, g_eye), None)
  cv.layer(W, _SCLERA, cov_eye, None)
  r_iris = 0.58 * ew
  f_iris = _ellipse(X, Y, x0 + gx, ey, r_iris, r_iris)
  g_iris = W.grad(f_iris)
  cov_iris = W.cov(f_iris, g_iris) * cov_eye
  cv.layer(W, d["eye_color"], cov_iris, None)
  cv.layer(W, _PUPIL, W.cov(f_iris + 0.55 * r_iris, g_iris) * cov_eye, None)
  hr = 0.22 * r_iris
  f_high = _ellipse(X, Y, x0 + gx + 0.35 * r_iris, ey - 0.35 * r_iris, hr, hr)
  cv.layer(W, _SCLERA, W.cov(f_high) * cov_eye, F32(1.0))
  if want_masks:
    masks["eyes"] = _mask(S, B, W, cov_eye)
    masks["irises"] = _mask(S, B, W, cov_iris)

  # Brows: thick bands from the inner to the outer end, slightly arched.
  W = win["brows"]
  X, Y = W.X, W.Y
  side = np.where(X < 0, F32(-1), F32(1))
  bix, box_ = col(d["brow_inner_x"]), col(d["brow_outer_x"])
  biy, boy = col(d["brow_inner_y"]), col(d["brow_outer_y"])
  xc = side * (bix + box_) * 0.5
  hlen = (box_ - bix) * 0.5
  ub = np.clip(side * (X - xc) / hlen, -1, 1)  # -1 inner end, +1 outer end
  cy_b = biy * (1 - ub) * 0.5 + boy * (1 + ub) * 0.5 - 0.035 * (1 - ub * ub)
  th = col(d["brow_th"]) * (0.75 - 0.25 * ub)
  cov_brows = W.cov(_band(X, Y, xc, hlen, cy_b, th))
  cv.layer(W, d["brow_color"], cov_brows, None)
  if want_masks:
    masks["brows"] = _mask(S, B, W, cov_brows)

  # Hair in front: the part of the hair shape above the hairline.
  W = hair_win
  X, Y = W.X, W.Y
  xw = X / w
  hairline = col(d["hairline"]) + 0.30 * xw * xw + col(d["hair_tilt"]) * xw
  cov_fringe = W.cov(np.maximum(f_hair_round, Y - hairline))
  cv.layer(W, d["hair"], cov_fringe, hair_shade[W.sl])
  if want_masks:
    back_visible = cov_hairback * (1 - head_cov[W.sl])
    masks["hair"] = _mask(S, B, W, cov_fringe + back_visible * (1 - cov_fringe))
    masks["silhouette"] = cv.silhouette

  # Light, colour cast, quantisation.
  cast = d["cast"]
  out = np.empty((B, S, S, 3), np.uint8)
  for c in range(3):
    v = cv.img[c] * cv.shade
    v *= cast[:, c].reshape(B, 1, 1)
    np.clip(v, F32(0.0), F32(1.0), out=v)
    v *= F32(255.0)
    v += F32(0.5)
    out[..., c] = v.astype(np.uint8)
  return out, masks


_CHUNK = 64  # images rendered together (keeps the working set in cache)


def _render_chunked(batch: FactorBatch, S: int, want_masks: bool):
  B = len(batch)
  if B <= _CHUNK:
    return _render(batch, S, want_masks)
  parts = [
    _render(
      FactorBatch(
        *(getattr(batch, f.name)[i : i + _CHUNK] for f in dataclasses.fields(FactorBatch))
      ),
      S,
      want_masks,
    )
    for i in range(0, B, _CHUNK)
  ]
  images = np.concatenate([p[0] for p in parts])
  masks = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
  return images, masks


def render_layers(factors, image_size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Render a batch and return (uint8 images (B, S, S, 3), masks).

  Masks (float32 coverage in [0, 1], (B, S, S)) are the label-free geometry of the drawing:
    silhouette  - everything that is not background
    face        - the face outline (without ears, hair, neck)
    hair        - the visible hair (in front of the face, and behind it but not
                  hidden by the face or the ears)
    eyes        - the visible eye openings (sclera)
    irises      - the visible irises
    brows       - the eyebrows
    mouth       - the lips and the opening (the whole mouth)
    mouth_open  - the opening between the lips
  """
  return _render_chunked(stack(factors), _check_size(image_size), want_masks=True)


def render_batch(factors, image_size: int = 64) -> np.ndarray:
  """Render a batch of factors ((B, S, S, 3) uint8)."""
  return _render_chunked(stack(factors), _check_size(image_size), want_masks=False)[0]


def render(factors: Factors, image_size: int = 64) -> np.ndarray:
  """Render one face ((S, S, 3) uint8)."""
  if not isinstance(factors, Factors):
    raise TypeError("render() takes one Factors; use render_batch() for batches")
  return render_batch(factors, image_size)[0]


def transfer_ground_truth(
  source: Factors, target: Factors, attributes: Iterable[str], image_size: int = 64
) -> np.ndarray:
  """The image a transfer should produce: ``source`` with ``attributes`` of ``target``.

  ``attributes`` is any subset of identity, expression (takes the expression and its
  intensity), illumination, gaze and color.
  """
  return render(transfer_factors(source, target, attributes), image_size)


def transfer_ground_truth_batch(
  sources, targets, attributes: Iterable[str], image_size: int = 64
) -> np.ndarray:
  """Batched :func:`transfer_ground_truth` over matching sequences of factors."""
  attributes = tuple(attributes)
  sources, targets = stack(sources), stack(targets)
  if len(sources) != len(targets):
    raise ValueError("sources and targets must have the same length")
  return render_batch(
    [transfer_factors(sources[i], targets[i], attributes) for i in range(len(sources))], image_size
  )

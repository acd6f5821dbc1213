"""The synthetic-faces renderer: determinism, what each factor changes and what it leaves alone."""

import numpy as np
import pytest

from attrdis.synthetic import render
from attrdis.synthetic.factors import (
  COLORS,
  EXPRESSIONS,
  GAZES,
  ILLUMINATIONS,
  NUM_IDENTITY_PARAMS,
  Factors,
  factors_from_record,
  identity_params,
  stack,
  transfer_factors,
)

ID_A = identity_params([0, 0])
ID_B = identity_params([0, 1])
ID_C = identity_params([7, 3])
SMILE, SURPRISE, ANGER, SADNESS = 1, 2, 3, 4
FRONT, LEFT, RIGHT, TOP, BOTTOM = range(5)
GEOMETRY = ("silhouette", "face", "hair", "eyes", "irises", "brows", "mouth", "mouth_open")


def layers(factors, size=64):
  return render.render_layers(factors, size)


def luminance(img):
  return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def random_factors(n, seed, extremes=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    p = rng.random(NUM_IDENTITY_PARAMS).astype(np.float32)
    if i < extremes:  # corners of the identity space
      p = (rng.random(NUM_IDENTITY_PARAMS) < 0.5).astype(np.float32)
    out.append(
      Factors(
        p,
        i % 5,
        1.0 if i < extremes else rng.random(),
        rng.integers(5),
        rng.integers(3),
        rng.integers(4),
      )
    )
  return out


# ---------------------------------------------------------------------------- determinism


def test_same_factors_give_byte_identical_images_whatever_the_batch():
  fs = random_factors(12, seed=1)
  first = render.render_batch(fs, 48)
  again = render.render_batch(fs, 48)
  assert first.dtype == np.uint8 and first.shape == (12, 48, 48, 3)
  assert first.tobytes() == again.tobytes()
  singles = np.stack([render.render(f, 48) for f in fs])
  assert singles.tobytes() == first.tobytes()
  reordered = render.render_batch(fs[::-1], 48)[::-1]
  assert reordered.tobytes() == first.tobytes()
  # And rebuilding the same factors from scratch gives the same images.
  rebuilt = [
    Factors(np.array(f.identity), f.expression, f.intensity, f.illumination, f.gaze, f.color)
    for f in fs
  ]
  assert render.render_batch(rebuilt, 48).tobytes() == first.tobytes()


@pytest.mark.parametrize("size", [16, 40])
def test_windowed_rendering_equals_full_frame_rendering(size):
  # Layers are evaluated in conservative windows; check they cut nothing, including at the
  # corners of the identity space and at full intensity.
  batch = stack(random_factors(60, seed=size, extremes=40))
  windowed, wm = render._render(batch, size, want_masks=True)
  full, fm = render._render(batch, size, want_masks=True, full=True)
  assert np.array_equal(windowed, full)
  for name in GEOMETRY:
    assert np.array_equal(wm[name], fm[name]), name


def test_sizes_and_validation():
  f = Factors(ID_A, SMILE, 0.5)
  for size in (16, 33, 64, 256):
    img = render.render(f, size)
    assert img.shape == (size, size, 3)
    # a face: a big non-background blob in the middle, background in the corner
    _, masks = layers(f, size)
    sil = masks["silhouette"][0]
    assert sil[size // 2, size // 2] == 1.0 and sil[0, 0] == 0.0
    assert 0.3 < sil.mean() < 0.8
  assert render.render(f).shape == (64, 64, 3)  # default size
  for bad in (15, 257):
    with pytest.raises(ValueError):
      render.render(f, bad)
  with pytest.raises(ValueError):
    Factors(ID_A, expression=5)
  with pytest.raises(ValueError):
    Factors(ID_A, SMILE, intensity=1.5)
  with pytest.raises(ValueError):
    Factors(ID_A[:-1])
  assert Factors(ID_A, "surprise", 0.5, "left", "right", "blue") == Factors(
    ID_A, SURPRISE, 0.5, LEFT, 2, 3
  )


def test_rendering_is_antialiased():
  _, masks = layers(Factors(ID_A), 64)
  face = masks["face"][0]
  partial = (face > 0.02) & (face < 0.98)
  assert partial.sum() > 40  # a soft edge all around the face...
  assert partial.sum() < 0.5 * (face > 0.98).sum()  # ...only one or two pixels wide
  img = render.render(Factors(ID_A), 64)
  assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500


def test_identities_are_seeded_continuous_draws():
  assert np.array_equal(identity_params([0, 5]), identity_params([0, 5]))
  draws = np.stack([identity_params([0, i]) for i in range(200)])
  assert draws.dtype == np.float32 and draws.shape == (200, NUM_IDENTITY_PARAMS)
  assert draws.min() >= 0 and draws.max() < 1
  # every parameter takes many distinct values (continuous, not categorical)
  assert all(len(np.unique(draws[:, j])) == 200 for j in range(NUM_IDENTITY_PARAMS))
  # and two identities differ in every parameter
  assert np.all(draws[0] != draws[1])


# ---------------------------------------------------------------------------- each factor


def test_each_factor_changes_the_image():
  base = Factors(ID_A, SMILE, 0.5, FRONT, 1, 0)
  ref = render.render(base, 64).astype(int)
  changes = {
    "identity": base.replace(identity=ID_B),
    "expression": base.replace(expression=SADNESS),
    "intensity": base.replace(intensity=1.0),
    "illumination": base.replace(illumination=LEFT),
    "gaze": base.replace(gaze=0),
    "color": base.replace(color=1),
  }
  for name, f in changes.items():
    diff = np.abs(render.render(f, 64).astype(int) - ref).max(-1)
    assert (diff > 20).sum() >= 8, name


def test_each_identity_parameter_changes_the_image():
  # Every parameter matters (some only under an expression, e.g. none of them is dead).
  base = Factors(np.full(NUM_IDENTITY_PARAMS, 0.5, np.float32), SMILE, 1.0)
  ref = render.render(base, 128).astype(int)
  for j in range(NUM_IDENTITY_PARAMS):
    p = base.identity.copy()
    p[j] = 0.0
    img = render.render(base.replace(identity=p), 128).astype(int)
    assert np.abs(img - ref).max() > 10, j


def test_illumination_shades_the_face_and_changes_no_geometry():
  fs = [Factors(ID_A, SMILE, 0.75, light, 1, 0) for light in range(len(ILLUMINATIONS))]
  imgs, masks = layers(fs, 64)
  for name in GEOMETRY:
    for k in range(1, len(fs)):
      assert np.array_equal(masks[name][k], masks[name][0]), name
  # skin of the face: not hair, eyes or brows (hairstyles and eye highlights are asymmetric)
  face = (
    (masks["face"][0] > 0.99)
    & (masks["hair"][0] < 0.01)
    & (masks["eyes"][0] < 0.01)
    & (masks["brows"][0] < 0.01)
  )
  S = 64
  cols = np.arange(S)[None, :].repeat(S, 0)
  rows = cols.T
  lum = [luminance(im) for im in imgs]

  def mean(k, where):
    return lum[k][face & where].mean()

  left, right = cols < S // 2 - 2, cols >= S // 2 + 2
  cy = int(np.argwhere(face)[:, 0].mean())
  upper, lower = rows < cy - 4, rows > cy + 4
  assert abs(mean(FRONT, left) - mean(FRONT, right)) < 3  # frontal light is symmetric
  assert mean(LEFT, left) > mean(LEFT, right) + 25
  assert mean(RIGHT, right) > mean(RIGHT, left) + 25
  assert mean(TOP, upper) > mean(TOP, lower) + 15
  assert mean(BOTTOM, lower) > mean(BOTTOM, upper) + 15
  # it is shading over the shape, not a tint: the same light brightens one side of the
  # face and darkens the other relative to frontal light
  assert mean(LEFT, left) > mean(FRONT, left) and mean(LEFT, right) < mean(FRONT, right)


def test_gaze_moves_only_the_irises():
  fs = [Factors(ID_B, ANGER, 0.5, TOP, g, 2) for g in range(len(GAZES))]
  _, masks = layers(fs, 128)
  for name in ("silhouette", "face", "hair", "eyes", "brows", "mouth", "mouth_open"):
    assert np.array_equal(masks[name][0], masks[name][1]), name
    assert np.array_equal(masks[name][2], masks[name][1]), name
  x = np.arange(128)
  cx = [(m * x).sum() / m.sum() for m in masks["irises"]]
  assert cx[0] < cx[1] - 2 and cx[2] > cx[1] + 2  # left looks to the image's left
  assert abs((cx[0] + cx[2]) / 2 - cx[1]) < 0.5


def test_colour_cast_tints_the_whole_image_and_changes_no_geometry():
  fs = [Factors(ID_C, SURPRISE, 1.0, RIGHT, 0, c) for c in range(len(COLORS))]
  imgs, masks = layers(fs, 32)
  for name in GEOMETRY:
    for k in range(1, len(fs)):
      assert np.array_equal(masks[name][k], masks[name][0]), name
  m = imgs.reshape(len(fs), -1, 3).astype(float).mean(1)  # mean R, G, B of each image
  none, red, green, blue = m
  assert red[0] / red[1] > 1.2 * none[0] / none[1]
  assert green[1] / green[0] > 1.2 * none[1] / none[0]
  assert blue[2] / blue[0] > 1.2 * none[2] / none[0]


def test_expression_changes_face_features_not_the_head():
  fs = [Factors(ID_A, e, 1.0, FRONT, 1, 0) for e in range(len(EXPRESSIONS))]
  imgs, masks = layers(fs, 64)
  for name in ("silhouette", "face", "hair"):
    for k in range(1, len(fs)):
      assert np.array_equal(masks[name][k], masks[name][0]), name
  for e in (SMILE, SURPRISE, ANGER, SADNESS):
    for name in ("mouth", "eyes", "brows"):
      assert np.abs(masks[name][e] - masks[name][0]).sum() > 1.0, (e, name)
  area = {e: masks["mouth_open"][e].sum() for e in range(5)}
  assert area[SURPRISE] > 1.8 * area[0] and area[ANGER] > 1.8 * area[0]
  eyes = {e: masks["eyes"][e].sum() for e in range(5)}
  assert eyes[SURPRISE] > 1.2 * eyes[0] > 1.2 * eyes[ANGER]
  # expressions differ from each other, not only from neutral
  for a in range(1, 5):
    for b in range(a + 1, 5):
      assert np.abs(imgs[a].astype(int) - imgs[b]).max(-1).astype(bool).sum() > 30


def test_neutral_has_intensity_zero():
  f = Factors(ID_A, 0, 0.8)
  assert f.intensity == 0.0
  assert render.render(f, 32).tobytes() == render.render(Factors(ID_A), 32).tobytes()
  # intensity 0 of any expression is the neutral face
  assert (
    render.render(Factors(ID_A, ANGER, 0.0), 32).tobytes()
    == render.render(Factors(ID_A), 32).tobytes()
  )


def _deformation(f):
  """Landmarks relative to the same face's neutral landmarks, in face units."""
  lm = render.landmarks(f)
  ln = render.landmarks(f.replace(expression=0, intensity=0.0))
  return {k: lm[k][0] - ln[k][0] for k in lm if k not in ("face_centre", "face_scale")}


def test_mouth_deformation_relative_to_the_face_does_not_depend_on_identity():
  for e in (SMILE, SURPRISE, ANGER, SADNESS):
    da = _deformation(Factors(ID_A, e, 0.75))
    db = _deformation(Factors(ID_B, e, 0.75))
    dc = _deformation(Factors(ID_C, e, 0.75, LEFT, 0, 3))
    for k in (
      "mouth_left",
      "mouth_right",
      "mouth_top",
      "mouth_bottom",
      "brow_inner_left",
      "brow_outer_right",
    ):
      np.testing.assert_allclose(da[k], db[k], atol=1e-6)
      np.testing.assert_allclose(da[k], dc[k], atol=1e-6)
    assert np.abs(da["mouth_left"]).max() + np.abs(da["mouth_bottom"]).max() > 0.01
  # Checked on the drawing: the mouth opening's height at the centre, in face units.
  S = 192
  for e in (SURPRISE, ANGER):
    fs = [Factors(ident, e, 1.0) for ident in (ID_A, ID_B, ID_C)]
    _, masks = layers(fs, S)
    lm = render.landmarks(fs)
    heights = []
    for k in range(3):
      column = masks["mouth_open"][k][:, S // 2 - 1 : S // 2 + 1].mean(1)
      heights.append(column.sum() / (lm["face_scale"][k] * S / 2))
    expected = lm["mouth_bottom"][0, 1] - lm["mouth_top"][0, 1]
    np.testing.assert_allclose(heights, expected, atol=0.02)


def test_intensity_is_monotone_in_the_deformation():
  intensities = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
  for e in (SMILE, SURPRISE, ANGER, SADNESS):
    norms = [
      np.sqrt(sum((v**2).sum() for v in _deformation(Factors(ID_B, e, t)).values()))
      for t in intensities
    ]
    assert norms[0] == 0.0
    assert np.all(np.diff(norms) > 0), (e, norms)
    # linear: the deformation at 0.4 is twice the deformation at 0.2
    d1, d2 = _deformation(Factors(ID_B, e, 0.2)), _deformation(Factors(ID_B, e, 0.4))
    for k in d1:
      np.testing.assert_allclose(d2[k], 2 * d1[k], atol=1e-5)
  # ... and on the drawing.
  fs = [Factors(ID_C, SURPRISE, t) for t in intensities]
  _, masks = layers(fs, 64)
  open_area = [m.sum() for m in masks["mouth_open"]]
  eye_area = [m.sum() for m in masks["eyes"]]
  assert np.all(np.diff(open_area) > 0) and np.all(np.diff(eye_area) > 0)
  rows = np.arange(64)[:, None]
  brow_y = [(m * rows).sum() / m.sum() for m in masks["brows"]]
  assert np.all(np.diff(brow_y) < 0)  # brows rise
  smiles = [Factors(ID_C, SMILE, t) for t in intensities]
  lm = render.landmarks(smiles)
  assert np.all(np.diff(lm["mouth_left"][:, 1]) < 0)  # the corners rise


def test_expressions_are_visible_at_32_px_and_grow_with_intensity():
  """At intensity 1 every expression-only change (from neutral, everything else equal)
  moves at least 5 % of the pixels by more than 0.1 at 32 px, and the share grows with the
  intensity; the weakest level of the dataset (0.25) still moves at least 0.75 %."""
  from attrdis.synthetic import visibility

  intensities = (0.25, 0.5, 0.75, 1.0)
  table = visibility.visibility_table(32, intensities, num_faces=64)
  for name, fractions in table.items():
    assert fractions[-1] >= 0.05, (name, fractions)
    assert fractions[0] >= 0.0075, (name, fractions)
    assert np.all(np.diff(fractions) > 0), (name, fractions)
  # The fraction itself, by hand on one face: pixels whose largest channel change > 0.1.
  faces = visibility.random_faces(1, seed=3)
  a = render.render_batch(faces, 32).astype(np.int32)
  b = render.render_batch(visibility.with_expression(faces, SURPRISE, 1.0), 32).astype(np.int32)
  by_hand = np.mean(np.abs(a - b).max(-1) / 255.0 > 0.1)
  assert visibility.changed_fraction(32, "surprise", 1.0, num_faces=1, seed=3) == by_hand


# ---------------------------------------------------------------------------- transfers


def test_transfer_ground_truth():
  s = Factors(ID_A, SMILE, 0.25, LEFT, 0, 1)
  t = Factors(ID_B, SURPRISE, 0.75, TOP, 2, 3)
  got = render.transfer_ground_truth(s, t, {"expression"}, 32)
  want = render.render(Factors(ID_A, SURPRISE, 0.75, LEFT, 0, 1), 32)
  assert got.tobytes() == want.tobytes()
  assert got.tobytes() != render.render(s, 32).tobytes()
  assert render.transfer_ground_truth(s, t, [], 32).tobytes() == render.render(s, 32).tobytes()
  everything = ("identity", "expression", "illumination", "gaze", "color")
  assert (
    render.transfer_ground_truth(s, t, everything, 32).tobytes() == render.render(t, 32).tobytes()
  )
  assert transfer_factors(s, t, ["identity", "illumination"]) == Factors(
    ID_B, SMILE, 0.25, TOP, 0, 1
  )
  with pytest.raises(ValueError):
    transfer_factors(s, t, ["pose"])
  batch = render.transfer_ground_truth_batch([s, t], [t, s], ["gaze", "color"], 32)
  assert batch[0].tobytes() == render.render(s.replace(gaze=2, color=3), 32).tobytes()
  assert batch[1].tobytes() == render.render(t.replace(gaze=0, color=1), 32).tobytes()


def test_factors_from_record():
  record = {
    "image": np.zeros((16, 16, 3), np.uint8),
    "identity": 7,
    "identity_params": ID_C,
    "expression": 3,
    "intensity": np.float32(0.75),
    "illumination": 4,
    "gaze": 0,
    "color": 2,
  }
  f = factors_from_record(record)
  assert f == Factors(ID_C, ANGER, 0.75, BOTTOM, 0, 2)


def test_benchmark_prints_the_visibility_table():
  from attrdis.synthetic import benchmark, visibility

  text = benchmark.visibility_report([32], intensities=(0.5, 1.0))
  lines = text.splitlines()
  assert len(lines) == 2 + 4  # title, header, one row per non-neutral expression
  smile = next(l for l in lines if l.startswith("smile"))
  want = visibility.changed_fraction(32, "smile", 1.0)
  assert smile.split()[-1] == f"{100 * want:.1f}%"

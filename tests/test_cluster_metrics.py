"""Hopkins statistic and classifier-entropy helpers (docs/design.md §4.2–4.3)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from PIL import Image

from attrdis import cluster_metrics as cm


def _brute_force_hopkins(x, uniform, idx):
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  uniform = np.asarray(uniform, np.float64)
  u = [min(math.dist(p, q) for q in x) for p in uniform]
  w = [min(math.dist(x[i], x[j]) for j in range(len(x)) if j != i) for i in np.asarray(idx)]
  return sum(u) / (sum(u) + sum(w)), u, w


def test_matches_brute_force_on_the_same_draws():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) * 0.3 + 4.0])
  uniform, idx = cm.hopkins_samples(x, jax.random.key(3))
  assert uniform.shape == (7, 5) and idx.shape == (7,)  # 10 % of 70
  assert len(set(np.asarray(idx).tolist())) == 7  # without replacement
  lo, hi = x.min(0), x.max(0)
  assert np.all(np.asarray(uniform) >= lo - 1e-6) and np.all(np.asarray(uniform) <= hi + 1e-6)
  h, u, w = cm.hopkins_from_samples(x, uniform, idx, return_distances=True)
  h_ref, u_ref, w_ref = _brute_force_hopkins(x, uniform, idx)
  np.testing.assert_allclose(u, u_ref, rtol=1e-5)
  np.testing.assert_allclose(w, w_ref, rtol=1e-5)
  assert h == pytest.approx(h_ref, rel=1e-6)
  assert cm.hopkins_statistic(x, jax.random.key(3)) == pytest.approx(h_ref, rel=1e-6)


def test_deterministic_and_key_dependent():
  x = np.random.default_rng(1).uniform(size=(100, 3))
  a = cm.hopkins_statistic(x, 7)
  assert cm.hopkins_statistic(x, 7) == a
  assert cm.hopkins_statistic(x, jax.random.key(7)) == a  # an int seed is that key
  assert cm.hopkins_statistic(x, 8) != a


def test_excludes_the_sampled_point_itself_but_not_its_duplicates():
  x = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])  # a duplicated point
  h, u, w = cm.hopkins_from_samples(x, np.array([[3.0, 0.0]]), np.array([0]), return_distances=True)
  assert w[0] == 0.0  # its duplicate is another point at distance 0
  assert u[0] == pytest.approx(3.0)
  h, u, w = cm.hopkins_from_samples(x, np.array([[3.0, 0.0]]), np.array([2]), return_distances=True)
  assert w[0] == pytest.approx(5.0) and h == pytest.approx(3.0 / 8.0)


def test_sample_count():
  assert cm.hopkins_num_samples(5) == 1  # at least one
  assert cm.hopkins_num_samples(686) == 69
  assert cm.hopkins_num_samples(10, 1.0) == 10
  with pytest.raises(ValueError):
    cm.hopkins_statistic(np.zeros((1, 3)))


def test_uniform_data_is_about_one_half():
  rng = np.random.default_rng(2)
  hs = [cm.hopkins_statistic(rng.uniform(size=(1000, 2)), k) for k in range(8)]
  assert abs(np.mean(hs) - 0.5) < 0.05
  assert all(0.3 < h < 0.7 for h in hs)


def test_tight_separated_clusters_are_near_one():
  rng = np.random.default_rng(3)
  centres = rng.uniform(-10, 10, size=(4, 8))
  x = np.concatenate([c + 1e-3 * rng.normal(size=(150, 8)) for c in centres]) + 1e3
  h = cm.hopkins_statistic(x, 0)
  assert h > 0.99
  # Code-like input: points given as feature maps are flattened per point.
  maps = x.reshape(600, 2, 2, 2)
  assert cm.hopkins_statistic(maps, 0) == pytest.approx(h, rel=1e-6)


def test_entropy_by_hand():
  k = 7
  assert cm.mean_entropy(np.zeros((5, k))) == pytest.approx(math.log(k), rel=1e-6)
  assert cm.mean_entropy(np.full((3, k), 4.2)) == pytest.approx(cm.max_entropy(k), rel=1e-6)
  confident = np.full((4, k), -30.0)
  confident[np.arange(4), [0, 3, 6, 2]] = 30.0
  assert 0.0 <= cm.mean_entropy(confident) < 1e-6
  assert cm.mean_entropy(np.array([[0.0, -np.inf]])) == pytest.approx(0.0)  # no NaN from 0·log 0
  # Two classes with p = (0.75, 0.25): H = -(0.75 ln 0.75 + 0.25 ln 0.25).
  two = np.array([[math.log(3.0), 0.0]])
  expect = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  assert cm.mean_entropy(two) == pytest.approx(expect, rel=1e-6)
  mixed = np.concatenate([np.zeros((1, 2)), two])
  np.testing.assert_allclose(cm.entropies(mixed), [math.log(2), expect], rtol=1e-6)
  assert cm.mean_entropy(mixed) == pytest.approx((math.log(2) + expect) / 2, rel=1e-6)


def test_colormap_endpoints_and_monotone_brightness():
  c = cm.colormap(np.linspace(0, 1, 11)).astype(float)
  np.testing.assert_array_equal(c[0], [68, 1, 84])
  np.testing.assert_array_equal(c[-1], [253, 231, 37])
  lum = c @ [0.299, 0.587, 0.114]
  assert np.all(np.diff(lum) > 0)


def test_heatmap_png(tmp_path):
  table = np.array([[0.01, 1.9, 1.2], [1.5, 0.02, math.log(7)]])
  path = tmp_path / "entropy.png"
  boxes = cm.write_heatmap_png(
    path,
    table,
    ["C_id", "C_expr"],
    ["z_id", "z_expr", "z_0"],
    title="Entropy of C_m on z_m'",
    row_title="classifier",
    col_title="code",
    vmax=math.log(7),
  )
  img = np.asarray(Image.open(path).convert("RGB"))
  assert boxes.shape == (2, 3, 4)
  assert img.shape[0] >= boxes[..., 3].max() and img.shape[1] > boxes[..., 2].max()
  for i in range(2):
    for j in range(3):
      x0, y0, x1, y1 = boxes[i, j]
      expect = cm.colormap(table[i, j] / math.log(7))
      np.testing.assert_array_equal(img[y0 + 2, x0 + 2], expect)  # corner: no text there
      np.testing.assert_array_equal(img[y1 - 3, x1 - 3], expect)
      centre = img[y0 + (y1 - y0) // 3 : y1 - (y1 - y0) // 3, x0 + 4 : x1 - 4]
      assert np.any(np.any(centre != expect, axis=-1))  # the value is written in the cell
  # Labels are drawn in the margins (dark pixels left of the first column / above the first row).
  x0, y0 = boxes[0, 0, :2]
  assert (img[y0 : boxes[1, 0, 3], :x0].min(axis=-1) < 100).any()
  assert (img[:y0, x0 : boxes[0, 2, 2]].min(axis=-1) < 100).any()
  with pytest.raises(ValueError):
    cm.write_heatmap_png(tmp_path / "bad.png", np.zeros((2, 2)), ["a"], ["b", "c"])

"""KID (Kernel Inception Distance) against a direct double loop in float64, and ``--kid`` of the
``python -m attrdis.fid`` command (stand-in Inception weights, no torch)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
import pytest

import fid_fixture_weights
from attrdis import fid

EPS = np.finfo(np.float64).eps


def kernel(a, b) -> float:
  d = len(a)
  return (math.fsum(float(a[t]) * float(b[t]) for t in range(d)) / d + 1.0) ** 3


def mmd2_by_hand(x, y) -> tuple[float, float]:
  """The unbiased MMD² by a double loop over the samples, and the scale of its terms (the
  mean |k| of the three sums) for the tolerance."""
  m, n = len(x), len(y)
  kxx = [kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j]
  kyy = [kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j]
  kxy = [kernel(x[i], y[j]) for i in range(m) for j in range(n)]
  value = (
    math.fsum(kxx) / (m * (m - 1)) + math.fsum(kyy) / (n * (n - 1)) - 2.0 * math.fsum(kxy) / (m * n)
  )
  scale = np.mean(np.abs(kxx)) + np.mean(np.abs(kyy)) + 2 * np.mean(np.abs(kxy))
  return value, scale


def tolerance(scale: float, num_terms: int, d: int) -> float:
  # Each kernel value carries O(d) rounding errors (the dot product), each mean O(num_terms)
  # more in the worst case; the result is a difference of such means.
  return 8 * (d + num_terms) * EPS * scale


def test_polynomial_kernel_by_hand():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
  k = fid.polynomial_kernel(x, y)
  assert k.shape == (3, 2) and k.dtype == np.float64
  for i in range(3):
    for j in range(2):
      assert k[i, j] == pytest.approx(kernel(x[i], y[j]), rel=64 * EPS)


@pytest.mark.parametrize("m,n,d", [(6, 8, 5), (2, 3, 1), (9, 9, 16)])
def test_mmd2_unbiased_matches_a_double_loop(m, n, d):
  rng = np.random.default_rng(m * 100 + n)
  x = rng.normal(size=(m, d)).astype(np.float32)  # float32 in, float64 inside
  y = (rng.normal(size=(n, d)) + 0.4).astype(np.float32)
  want, scale = mmd2_by_hand(x, y)
  assert fid.mmd2_unbiased(x, y) == pytest.approx(want, abs=tolerance(scale, m * n, d))


def test_kid_over_whole_sets_is_one_estimate():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(7, 6)), rng.normal(size=(7, 6)) * 1.3
  kid = fid.kid_from_features(x, y)  # min(1000, 7, 7) = 7: every subset is both sets
  want, scale = mmd2_by_hand(x, y)
  assert (kid.subset_size, kid.num_subsets, kid.std) == (7, 1, 0.0)
  assert kid.kid == pytest.approx(want, abs=tolerance(scale, 49, 6))


def test_kid_is_the_mean_and_std_over_its_subsets():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(12, 5)), rng.normal(size=(15, 5)) + 0.3
  subsets = fid.kid_subsets(12, 15, num_subsets=7, subset_size=5, seed=3)
  assert len(subsets) == 7
  for i, j in subsets:  # drawn without replacement, within range
    assert len(set(i.tolist())) == 5 == len(set(j.tolist()))
    assert i.max() < 12 and j.max() < 15
  by_hand = [mmd2_by_hand(x[i], y[j]) for i, j in subsets]
  values = np.array([v for v, _ in by_hand])
  tol = tolerance(max(s for _, s in by_hand), 25, 5)
  kid = fid.kid_from_features(x, y, num_subsets=7, subset_size=5, seed=3)
  assert (kid.subset_size, kid.num_subsets) == (5, 7)
  assert kid.kid == pytest.approx(values.mean(), abs=tol)
  assert kid.std == pytest.approx(values.std(ddof=0), abs=2 * tol)
  assert kid.std > 0
  other = fid.kid_from_features(x, y, num_subsets=7, subset_size=5, seed=4)
  assert other.kid != kid.kid  # the seed draws the subsets
  # The subset size is at most the smaller set.
  assert fid.kid_from_features(x, y, num_subsets=3, subset_size=1000).subset_size == 12


def test_kernel_matrix_and_per_subset_paths_agree(monkeypatch):
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(40, 8)), rng.normal(size=(50, 8)) + 0.2
  a = fid.kid_from_features(x, y, num_subsets=9, subset_size=20)
  monkeypatch.setattr(fid, "_KID_GRAM_MAX_POINTS", 0)
  b = fid.kid_from_features(x, y, num_subsets=9, subset_size=20)
  _, scale = mmd2_by_hand(x[:20], y[:20])
  assert a.kid == pytest.approx(b.kid, abs=tolerance(scale, 400, 8))
  assert a.std == pytest.approx(b.std, abs=2 * tolerance(scale, 400, 8))


def test_kid_grows_with_the_distance_between_the_sets():
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(300, 10)), rng.normal(size=(300, 10))
  values = [
    fid.kid_from_features(x, y + shift, num_subsets=20, subset_size=200).kid
    for shift in (0.0, 0.3, 1.0)
  ]
  assert values[0] < values[1] < values[2] and values[1] > 0


def test_kid_refuses_bad_input():
  x = np.zeros((5, 3))
  with pytest.raises(ValueError, match="same d"):
    fid.kid_from_features(x, np.zeros((5, 4)))
  with pytest.raises(ValueError, match="at least 2 samples"):
    fid.kid_from_features(x, np.zeros((1, 3)))
  with pytest.raises(ValueError, match="num_subsets"):
    fid.kid_from_features(x, x, num_subsets=0)


# ------------------------------------------------------------------------------------------
# The command.


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """Two folders of 3 and 4 small images and the stand-in weights (an .npz state dict)."""
  root = tmp_path_factory.mktemp("kidcli")
  rng = np.random.default_rng(7)
  for name, n in (("a", 3), ("b", 4)):
    (root / name).mkdir()
    for i in range(n):
      img = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
      Image.fromarray(img).save(root / name / f"{i}.png")
  fid_fixture_weights.save_weights_npz(root / "weights.npz")
  return root


_run = fid_fixture_weights.run_fid_command


def test_cli_prints_fid_and_kid_from_the_same_features(folders, capsys, tmp_path):
  w = f"--weights={folders / 'weights.npz'}"
  rc, out, err = _run(capsys, folders / "a", folders / "b", w, "--kid", "--kid-subsets", 5)
  assert rc == 0, err
  lines = out.splitlines()
  assert len(lines) == 2 and lines[0].startswith("FID: ") and lines[1].startswith("KID: ")
  extractor = fid.InceptionFeatureExtractor(fid.load_weights(folders / "weights.npz"))
  fa = extractor.features_of_files(fid.list_images(folders / "a"))
  fb = extractor.features_of_files(fid.list_images(folders / "b"))
  want = fid.kid_from_features(fa, fb, num_subsets=5)
  assert lines[1] == (f"KID: {want.kid} (std {want.std} over 5 subsets of 3 images)")
  assert float(lines[0].split()[1]) == pytest.approx(fid.fid_from_features(fa, fb), rel=1e-9)
  # --save-stats --kid keeps the features, so a saved reference serves KID later.
  rc, out, err = _run(capsys, folders / "b", tmp_path / "b_ref.npz", w, "--save-stats", "--kid")
  assert rc == 0, err
  with np.load(tmp_path / "b_ref.npz") as f:
    np.testing.assert_allclose(f["features"], fb, rtol=1e-6)
  rc, out, err = _run(capsys, folders / "a", tmp_path / "b_ref.npz", w, "--kid", "--kid-subsets", 5)
  assert rc == 0 and out.splitlines()[1] == lines[1]


def test_cli_kid_errors_are_one_line(folders, capsys, tmp_path):
  np.savez(tmp_path / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
  rc, out, err = _run(
    capsys, folders / "a", tmp_path / "stats.npz", "--kid", f"--weights={folders / 'weights.npz'}"
  )
  assert rc == 1 and err.count("\n") == 1 and err.startswith("error: ")
  assert "stats.npz" in err and "--save-stats --kid" in err
  rc, out, err = _run(capsys, folders / "a", folders / "b", "--kid", "--kid-subset-size", 1)
  assert rc == 2 and "--kid-subset-size" in err

"""The Fréchet distance, statistics, and the `python -m attrdis.fid` command (no torch)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

import fid_fixture_weights
from attrdis import fid
from attrdis import inception

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
REPO = pathlib.Path(__file__).resolve().parent.parent


def _random_spd(rng, d, rank=None):
  a = rng.standard_normal((d, rank or 2 * d))
  return a @ a.T / a.shape[1]


def _sqrtm_reference(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real


EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def fid_error_bound(mu1, s1, mu2, s2, eps=EPS64):
  """A bound on the rounding error of the Fréchet distance as computed through symmetric
  eigendecompositions (any backward-stable evaluation), from the inputs' size and spectrum.

  A backward-stable eigh of Σ₁ and then of M = √Σ₁ Σ₂ √Σ₁ (d × d) gives each eigenvalue λ of
  M to within δ = 2·d·ε·‖Σ₁‖₂‖Σ₂‖₂, which moves √λ by at most min(√δ, δ / (2√λ)): the square
  root amplifies the error of the eigenvalues that are (near) 0, as in singular covariances.
  The trace term counts twice; summing the terms adds d·ε times their size."""
  mu1, mu2, s1, s2 = (np.asarray(a, np.float64) for a in (mu1, mu2, s1, s2))
  d = len(mu1)
  delta = 2 * d * eps * np.linalg.norm(s1, 2) * np.linalg.norm(s2, 2)
  w, v = np.linalg.eigh(s1)
  r = v * np.sqrt(np.clip(w, 0, None))
  lam = np.clip(np.linalg.eigvalsh(r.T @ s2 @ r), 0, None)
  shift = np.minimum(np.sqrt(delta), delta / (2 * np.sqrt(np.maximum(lam, np.finfo(float).tiny))))
  diff = mu1 - mu2
  size = diff @ diff + np.trace(s1) + np.trace(s2) + 2 * np.sqrt(lam).sum()
  return 2 * shift.sum() + d * eps * size


def lowrank_error_bound(f1, f2, eps=EPS64):
  """The same for :func:`fid.fid_from_features`' low-rank form: the singular values of
  A₁A₂ᵀ (n₁ × n₂) come to within n·ε‖A₁‖‖A₂‖ (n = n₁ + n₂ + d, for forming the product and
  the SVD), with no square root of an eigenvalue; the traces and the mean to d·n·ε of their
  size."""
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  (n1, d), n2 = f1.shape, len(f2)
  a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
  n = n1 + n2 + d
  sv = n * eps * np.linalg.norm(a1, 2) * np.linalg.norm(a2, 2) / np.sqrt((n1 - 1) * (n2 - 1))
  size = (
    np.sum((f1.mean(0) - f2.mean(0)) ** 2) + np.sum(a1**2) / (n1 - 1) + np.sum(a2**2) / (n2 - 1)
  )
  return 2 * min(n1, n2) * sv + d * n * eps * size


# ------------------------------------------------------------------------------------------
# Statistics and the distance.
# ------------------------------------------------------------------------------------------


def test_statistics_are_numpy_mean_and_cov():
  f = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
  mu, sigma = fid.compute_statistics(f)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
  centred = f.astype(np.float64) - mu
  np.testing.assert_allclose(sigma, centred.T @ centred / 6, rtol=1e-12)  # ddof = 1
  with pytest.raises(ValueError, match="at least 2"):
    fid.compute_statistics(f[:1])


def test_diagonal_covariances_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
  a, b = np.array([4.0, 1.0, 9.0]), np.array([1.0, 1.0, 0.25])
  # FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2 = 5 + (1 + 0 + 6.25)
  expect = 5.0 + 1.0 + 0.0 + 6.25
  tol = fid_error_bound(mu1, np.diag(a), mu2, np.diag(b))
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(
    expect, rel=0, abs=tol
  )
  assert float(fid.frechet_distance_jnp(mu1, np.diag(a), mu2, np.diag(b))) == pytest.approx(
    expect, rel=0, abs=tol
  )
  assert (
    0.0
    <= fid.frechet_distance(mu1, np.diag(a), mu1, np.diag(a))
    <= fid_error_bound(mu1, np.diag(a), mu1, np.diag(a))
  )
  # A rotation of both covariances changes nothing (beyond the rounding of the rotated
  # inputs, a few ε of their size: the bound counted twice).
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
  got = fid.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
  assert got == pytest.approx(expect, rel=0, abs=2 * tol)


@pytest.mark.parametrize("d", [2, 17, 64])
def test_matches_scipy_sqrtm_on_random_spd(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
  expect = _sqrtm_reference(mu1, s1, mu2, s2)
  # The reference (sqrtm of the non-symmetric product) has an error of the same order.
  tol = 2 * fid_error_bound(mu1, s1, mu2, s2)
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=0, abs=tol)
  assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expect, rel=0, abs=tol)
  assert float(fid.frechet_distance_jnp(mu1, s1, mu2, s2)) == pytest.approx(expect, rel=0, abs=tol)
  f32 = float(fid.frechet_distance_jnp(mu1, s1, mu2, s2, dtype=np.float32))
  assert f32 == pytest.approx(expect, rel=0, abs=fid_error_bound(mu1, s1, mu2, s2, EPS32))


def test_singular_covariances_are_safe():
  # Fewer samples than dimensions: both covariances are singular (rank 5 and 6 in 40-d).
  rng = np.random.default_rng(3)
  f1 = rng.normal(size=(6, 40))
  f2 = rng.normal(size=(7, 40)) * 1.5 + 0.3
  m1, s1 = fid.compute_statistics(f1)
  m2, s2 = fid.compute_statistics(f2)
  assert np.linalg.matrix_rank(s1) == 5
  via_stats = fid.frechet_distance(m1, s1, m2, s2)
  via_features = fid.fid_from_features(f1, f2)  # exact low-rank form
  assert np.isfinite(via_stats)
  tol = fid_error_bound(m1, s1, m2, s2) + lowrank_error_bound(f1, f2)
  assert via_stats == pytest.approx(via_features, rel=0, abs=tol)
  assert float(fid.frechet_distance_jnp(m1, s1, m2, s2)) == pytest.approx(
    via_features, rel=0, abs=tol
  )
  # The same singular distribution against itself is 0 up to rounding, never negative or NaN:
  # the eigenvalues that are 0 come out as rounding noise ≥ 0 (clipped), whose square roots
  # inflate Tr (Σ₁Σ₂)^½, so unclamped the distance comes out below 0.
  for seed in range(10):
    g = np.random.default_rng([3, seed]).normal(size=(6, 40))
    m, s = fid.compute_statistics(g)
    for value in (fid.frechet_distance(m, s, m, s), float(fid.frechet_distance_jnp(m, s, m, s))):
      assert 0.0 <= value <= fid_error_bound(m, s, m, s), (seed, value)
    assert 0.0 <= fid.fid_from_features(g, g) <= lowrank_error_bound(g, g)
  # A zero covariance (all samples equal) is fine too: FID = |diff|^2 + tr(s2).
  z = np.zeros((40, 40))
  assert fid.frechet_distance(m1, z, m2, s2) == pytest.approx(
    np.sum((m1 - m2) ** 2) + np.trace(s2), rel=1e-10
  )


def test_fid_from_features_both_paths_agree():
  rng = np.random.default_rng(4)
  for n1, n2, d in [(5, 9, 8), (20, 30, 8), (3, 12, 10)]:  # low-rank path and stats path
    f1, f2 = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) + 0.5
    stats = (*fid.compute_statistics(f1), *fid.compute_statistics(f2))
    expect = fid.frechet_distance(*stats)
    tol = fid_error_bound(*stats) + lowrank_error_bound(f1, f2)
    assert fid.fid_from_features(f1, f2) == pytest.approx(expect, rel=0, abs=tol)
  with pytest.raises(ValueError, match="dimensions differ"):
    fid.fid_from_features(rng.normal(size=(3, 4)), rng.normal(size=(3, 5)))


def test_bad_statistics_are_refused():
  with pytest.raises(ValueError, match="covariances"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
  with pytest.raises(ValueError, match="non-finite"):
    fid.frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------
# The command.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURES / "fid_reference.npz") as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ref):
  """Two folders of the fixture's PNGs and the stand-in weights as an .npz state dict."""
  root = tmp_path_factory.mktemp("fidcli")
  for s in "ab":
    (root / s).mkdir()
    for i, img in enumerate(ref[f"images_{s}"][:2]):
      Image.fromarray(img).save(root / s / f"img_{i:02d}.png")
  fid_fixture_weights.save_weights_npz(root / "weights.npz")
  return root


_run = fid_fixture_weights.run_fid_command


def test_cli_matches_pytorch_fid_end_to_end(setup, ref, capsys, tmp_path):
  # The first k images of each set: pytorch-fid's calculate_fid_given_paths gave the reference.
  k = int(ref["cli_subset"])
  for s in "ab":
    (tmp_path / s).mkdir()
    for i, img in enumerate(ref[f"images_{s}"][:k]):
      Image.fromarray(img).save(tmp_path / s / f"{i}.png")
  rc, out, err = _run(
    capsys,
    tmp_path / "a",
    tmp_path / "b",
    f"--weights={setup / 'weights.npz'}",
    "--batch-size",
    5,
    "--log-every",
    1,
  )
  assert rc == 0, err
  assert out.startswith("FID: ") and out.count("\n") == 1
  value = float(out.split()[1])
  assert value == pytest.approx(float(ref["fid_given_paths_subset"]), rel=1e-4)
  assert f"{tmp_path / 'a'}: 5/5 images" in err and f"{tmp_path / 'b'}: 5/5 images" in err


def test_cli_save_stats_then_compare(setup, ref, capsys, tmp_path):
  (tmp_path / "a5").mkdir()  # one batch of the fixture's set a
  for i, img in enumerate(ref["images_a"][:5]):
    Image.fromarray(img).save(tmp_path / "a5" / f"{i}.png")
  out_npz = tmp_path / "a_stats"  # ".npz" is appended, as numpy does
  rc, out, err = _run(
    capsys,
    tmp_path / "a5",
    out_npz,
    "--save-stats",
    f"--weights={setup / 'weights.npz'}",
    "--batch-size",
    5,
  )
  assert rc == 0, err
  with np.load(tmp_path / "a_stats.npz") as f:
    mu, sigma = f["mu"], f["sigma"]
  ref_mu, ref_sigma = fid.compute_statistics(ref["features_a"][:5])
  np.testing.assert_allclose(mu, ref_mu, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-3, atol=1e-4 * np.abs(ref_sigma).max())
  # Like pytorch-fid, an existing output is not overwritten.
  rc, out, err = _run(
    capsys,
    tmp_path / "a5",
    tmp_path / "a_stats.npz",
    "--save-stats",
    f"--weights={setup / 'weights.npz'}",
  )
  assert rc == 1 and "existing output file" in err and err.count("\n") == 1


def test_cli_two_npz_need_no_weights(tmp_path, capsys):
  rng = np.random.default_rng(5)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
  np.savez(tmp_path / "x.npz", mu=m1, sigma=s1)
  np.savez(tmp_path / "y.npz", mu=m2, sigma=s2)
  rc, out, err = _run(capsys, tmp_path / "x.npz", tmp_path / "y.npz")
  assert rc == 0, err
  # The value is printed with all its digits (repr of the float).
  assert float(out.split()[1]) == pytest.approx(
    _sqrtm_reference(m1, s1, m2, s2), rel=0, abs=2 * fid_error_bound(m1, s1, m2, s2)
  )
  np.savez(tmp_path / "bad.npz", mean=m1)
  rc, out, err = _run(capsys, tmp_path / "x.npz", tmp_path / "bad.npz")
  assert rc == 1 and "'mu' and 'sigma'" in err


def _one_line_error(rc, err):
  assert rc == 1
  assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
  return err


def test_cli_errors_are_one_line(setup, tmp_path, capsys):
  w = f"--weights={setup / 'weights.npz'}"
  err = _one_line_error(*_run(capsys, setup / "a", setup / "b", "--weights=/nope/w.pth")[::2])
  assert inception.FID_WEIGHTS_FILENAME in err and inception.FID_WEIGHTS_URL in err
  assert "/nope/w.pth" in err
  err = _one_line_error(*_run(capsys, setup / "a", setup / "b")[::2])  # no --weights at all
  assert inception.FID_WEIGHTS_URL in err
  err = _one_line_error(*_run(capsys, setup / "a", tmp_path / "missing", w)[::2])
  assert "invalid path" in err and "missing" in err
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("not an image")
  err = _one_line_error(*_run(capsys, setup / "a", tmp_path / "empty", w)[::2])
  assert "no images" in err and "empty" in err
  (tmp_path / "one").mkdir()
  Image.new("RGB", (8, 8)).save(tmp_path / "one" / "x.png")
  err = _one_line_error(*_run(capsys, setup / "a", tmp_path / "one", w)[::2])
  assert "at least 2 images" in err
  (tmp_path / "bad").mkdir()
  Image.new("RGB", (8, 8)).save(tmp_path / "bad" / "fine.png")
  (tmp_path / "bad" / "corrupt.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
  err = _one_line_error(*_run(capsys, tmp_path / "bad", setup / "b", w)[::2])
  assert "cannot read image" in err and "corrupt.jpg" in err
  (tmp_path / "junk.pth").write_bytes(b"junk")
  err = _one_line_error(
    *_run(capsys, setup / "a", setup / "b", f"--weights={tmp_path / 'junk.pth'}")[::2]
  )
  assert "junk.pth" in err


def test_module_entry_point_reports_missing_weights(setup):
  env = dict(
    os.environ,
    PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    JAX_PLATFORMS="cpu",
  )
  proc = subprocess.run(
    [sys.executable, "-m", "attrdis.fid", str(setup / "a"), str(setup / "b")],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=120,
  )
  assert proc.returncode == 1 and proc.stdout == ""
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr
  assert inception.FID_WEIGHTS_FILENAME in lines[0] and inception.FID_WEIGHTS_URL in lines[0]


def test_folder_with_mixed_image_sizes(setup, ref, tmp_path):
  # pytorch-fid cannot batch images of different sizes; here each same-size run is its own batch.
  order = [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]
  for n, (s, i) in enumerate(order):
    Image.fromarray(ref[f"images_{s}"][i]).save(tmp_path / f"{n}.png")
  extractor = fid.InceptionFeatureExtractor(fid.load_weights(setup / "weights.npz"), batch_size=5)
  feats = extractor.features_of_files(sorted(tmp_path.glob("*.png")))
  expect = np.stack([ref[f"features_{s}"][i] for s, i in order])
  np.testing.assert_allclose(feats, expect, rtol=1e-4, atol=1e-5)

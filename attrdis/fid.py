r"""Fréchet Inception Distance, as pytorch-fid computes it, in JAX (docs/design.md §4.5).

Library:

* :class:`InceptionFeatureExtractor` — jitted, batched pool3 (2048-d) features of images (NHWC,
  uint8 or float in [0, 1], any size: resized to 299 like pytorch-fid) with the FID
  Inception-V3 of :mod:`attrdis.inception`.
* :func:`compute_statistics` — mu and sigma (``np.cov`` semantics, ddof = 1), float64.
* :func:`frechet_distance` — ‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½ in float64 on the host;
  the trace term is Σ √λ over the (clipped ≥ 0) eigenvalues of the symmetric √Σ₁ Σ₂ √Σ₁
  (``eigh`` throughout), so singular covariances (fewer samples than dimensions) are safe.
  :func:`frechet_distance_jnp` is the same in jnp (jitted; float64 by default).
* :func:`fid_from_features` — FID of two feature sets (exact low-rank form when n ≤ d).
* :func:`kid_from_features` — KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic
  polynomial kernel k(x, y) = (xᵀy/d + 1)³, averaged over ``KID_NUM_SUBSETS`` = 100 subsets
  of min(1000, n₁, n₂) images of each set (drawn with ``numpy.random.default_rng(seed)``), and
  its standard deviation over the subsets; float64 on the host.

Command (like ``python -m pytorch_fid``)::

    python -m attrdis.fid PATH1 PATH2 --weights=pt_inception-2015-12-05-6726825d.pth \
        [--batch-size 50] [--save-stats] [--kid]

Each PATH is a folder of images or an ``.npz`` with ``mu`` and ``sigma``; prints ``FID: <value>``.
With ``--save-stats`` the statistics of PATH1 are written to PATH2 (an .npz that must not exist).
``--kid`` also prints ``KID: <mean> (std <std> over <N> subsets of <M> images)`` from the same
features (PATHs: folders, or .npz files saved with ``--save-stats --kid``, which hold the
features too); ``--kid-subsets``, ``--kid-subset-size`` change N and M.
``--weights`` takes pytorch-fid's ``.pth`` (read without torch) or an ``.npz`` of the same state
dict; it is not needed when both paths are .npz statistics. ``--help`` lists the flags; an error
is one ``error: ...`` line (status 1; 2 for a bad command line).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import sys
from typing import Callable, Iterable, Sequence

from absl import flags
from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from PIL import Image

from attrdis import cli
from attrdis import errors
from attrdis import inception
from attrdis.inception import FID_WEIGHTS_FILENAME, FID_WEIGHTS_URL

logger = logging.getLogger(__name__)

# The extensions pytorch-fid globs for (matched case-insensitively here).
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
DEFAULT_BATCH_SIZE = 50


class FIDError(errors.UserError):
  """A user-facing problem (bad path, unreadable image, …); the command prints it as one line."""


# --------------------------------------------------------------------------------------------
# Statistics and the Fréchet distance.
# --------------------------------------------------------------------------------------------


def compute_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of features (n, d): the mean and ``np.cov(rowvar=False)`` (ddof=1), float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2:
    raise ValueError(f"features must be (n, d), got shape {f.shape}")
  if f.shape[0] < 2:
    raise ValueError(f"statistics need at least 2 samples, got {f.shape[0]}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _check_stats(mu1, sigma1, mu2, sigma2, xp=np, dtype=np.float64):
  mu1, mu2 = xp.atleast_1d(xp.asarray(mu1, dtype)), xp.atleast_1d(xp.asarray(mu2, dtype))
  sigma1, sigma2 = (
    xp.atleast_2d(xp.asarray(sigma1, dtype)),
    xp.atleast_2d(xp.asarray(sigma2, dtype)),
  )
  d = mu1.shape[0]
  if mu1.ndim != 1 or mu2.shape != (d,):
    raise ValueError(f"means have different or bad shapes: {mu1.shape}, {mu2.shape}")
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"covariances must be {(d, d)}, got {sigma1.shape}, {sigma2.shape}")
  return mu1, sigma1, mu2, sigma2


def trace_sqrt_product(sigma1, sigma2) -> float:
  """Tr (Σ₁Σ₂)^½ = Σ √λᵢ(√Σ₁ Σ₂ √Σ₁), eigenvalues clipped at 0, float64, symmetric eigh only.

  With Σ₁ = V diag(w) Vᵀ, √Σ₁ Σ₂ √Σ₁ is orthogonally similar to diag(√w) (Vᵀ Σ₂ V) diag(√w),
  whose eigenvalues are taken (w clipped at 0 first).
  """
  s1 = np.asarray(sigma1, np.float64)
  s2 = np.asarray(sigma2, np.float64)
  s1, s2 = 0.5 * (s1 + s1.T), 0.5 * (s2 + s2.T)
  w, v = scipy.linalg.eigh(s1, check_finite=False)
  sw = np.sqrt(np.clip(w, 0.0, None))
  m = (v.T @ s2 @ v) * np.outer(sw, sw)
  ev = scipy.linalg.eigh(0.5 * (m + m.T), eigvals_only=True, check_finite=False)
  return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """FID between N(mu1, sigma1) and N(mu2, sigma2), float64 on the host.

  Never below 0: the distance is a difference of traces, and rounding can leave a tiny
  negative number (−1e-6 for two identical singular covariances) where the exact value is 0;
  such values are returned as 0.
  """
  mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
  for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{name} has non-finite values")
  diff = mu1 - mu2
  return max(
    0.0,
    float(
      diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    ),
  )


_HI = jax.lax.Precision.HIGHEST


@jax.jit
def _frechet_distance_jnp(mu1, sigma1, mu2, sigma2):
  sym = lambda a: 0.5 * (a + a.T)
  s1, s2 = sym(sigma1), sym(sigma2)
  w, v = jnp.linalg.eigh(s1)
  sw = jnp.sqrt(jnp.clip(w, 0.0))
  m = jnp.matmul(jnp.matmul(v.T, s2, precision=_HI), v, precision=_HI) * jnp.outer(sw, sw)
  ev = jnp.linalg.eigvalsh(sym(m))
  tr_covmean = jnp.sum(jnp.sqrt(jnp.clip(ev, 0.0)))
  diff = mu1 - mu2
  return jnp.maximum(
    jnp.dot(diff, diff, precision=_HI) + jnp.trace(s1) + jnp.trace(s2) - 2.0 * tr_covmean, 0.0
  )


def frechet_distance_jnp(mu1, sigma1, mu2, sigma2, dtype=jnp.float64) -> jax.Array:
  """:func:`frechet_distance` in jnp (jitted) on the default device.

  float64 (the default; enabled for this call with ``jax.enable_x64``) is what FID needs: in
  float32 the eigenvalues that should be 0 come out at ~1e-7·λmax, and the sum of their square
  roots over 2048 dimensions biases the result (badly for singular covariances). ``dtype=
  jnp.float32`` is offered for speed on devices without float64. Clamped at 0 like
  :func:`frechet_distance`.
  """
  dtype = jnp.dtype(dtype)
  with jax.enable_x64(dtype == jnp.float64):
    args = _check_stats(mu1, sigma1, mu2, sigma2, xp=np, dtype=dtype)
    return _frechet_distance_jnp(*(jnp.asarray(a, dtype) for a in args))


def fid_from_features(features1, features2) -> float:
  """FID between two feature sets (n₁, d) and (n₂, d), each with n ≥ 2, float64.

  Equal to ``frechet_distance(*compute_statistics(features1), *compute_statistics(features2))``.
  When both sets are no larger than d (e.g. a few hundred images, 2048-d features) it uses the
  exact low-rank form: with centred features A₁, A₂, Tr (Σ₁Σ₂)^½ is the sum of the singular
  values of A₁A₂ᵀ / √((n₁−1)(n₂−1)), which is cheaper and has no near-zero-eigenvalue noise.
  Clamped at 0 like :func:`frechet_distance`.
  """
  mu1, s1 = compute_statistics(features1)
  mu2, s2 = compute_statistics(features2)
  f1 = np.asarray(features1, np.float64)
  f2 = np.asarray(features2, np.float64)
  (n1, d), (n2, d2) = f1.shape, f2.shape
  if d != d2:
    raise ValueError(f"feature dimensions differ: {d} vs {d2}")
  if max(n1, n2) > d:
    return frechet_distance(mu1, s1, mu2, s2)
  a1, a2 = f1 - mu1, f2 - mu2
  sv = scipy.linalg.svdvals(a1 @ a2.T, check_finite=False)
  tr_covmean = sv.sum() / np.sqrt((n1 - 1) * (n2 - 1))
  diff = mu1 - mu2
  return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean))


# --------------------------------------------------------------------------------------------
# Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018).
# --------------------------------------------------------------------------------------------

KID_SUBSET_SIZE = 1000  # subsets of min(1000, n₁, n₂) images, as Bińkowski et al.
KID_NUM_SUBSETS = 100  # as torch-fidelity and clean-fid
# Up to this many images in all, the kernel matrices of all of them are computed once and the
# subsets read from them (≤ 288 MB of float64); beyond, each subset computes its own.
_KID_GRAM_MAX_POINTS = 6000


@dataclasses.dataclass(frozen=True)
class KID:
  """KID: the mean of the unbiased MMD² estimates over ``num_subsets`` subsets of
  ``subset_size`` images of each set, and their standard deviation (ddof = 0)."""

  kid: float
  std: float
  subset_size: int
  num_subsets: int


def polynomial_kernel(x, y) -> np.ndarray:
  """k(x, y) = (xᵀy / d + 1)³ for every row pair of x (m, d) and y (n, d), float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
  m, n = kxx.shape[0], kyy.shape[0]
  return float(
    (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    - 2.0 * kxy.mean()
  )


def mmd2_unbiased(x, y) -> float:
  """The unbiased estimate of MMD² between the samples x (m, d) and y (n, d), m, n ≥ 2, with
  the cubic polynomial kernel: mean k(xᵢ, xⱼ) over i ≠ j + mean k(yᵢ, yⱼ) over i ≠ j
  − 2 mean k(xᵢ, yⱼ) over all i, j."""
  return _mmd2(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def kid_subsets(
  n1: int,
  n2: int,
  num_subsets: int = KID_NUM_SUBSETS,
  subset_size: int = KID_SUBSET_SIZE,
  seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
  """The (rows of set 1, rows of set 2) of each subset :func:`kid_from_features` uses: size
  m = min(subset_size, n₁, n₂), drawn without replacement by ``numpy.random.default_rng(seed)``.
  When m = n₁ = n₂ every subset is the whole of both sets, so there is one."""
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(
      f"KID needs num_subsets ≥ 1 and subset_size ≥ 2, got {num_subsets}, {subset_size}"
    )
  m = min(subset_size, n1, n2)
  if m < 2:
    raise ValueError(f"KID needs at least 2 samples in each set, got {n1} and {n2}")
  if m == n1 == n2:
    return [(np.arange(n1), np.arange(n2))]
  rng = np.random.default_rng(seed)
  return [
    (rng.choice(n1, m, replace=False), rng.choice(n2, m, replace=False)) for _ in range(num_subsets)
  ]


def kid_from_features(
  features1,
  features2,
  num_subsets: int = KID_NUM_SUBSETS,
  subset_size: int = KID_SUBSET_SIZE,
  seed: int = 0,
) -> KID:
  """KID between two feature sets (n₁, d) and (n₂, d): the unbiased MMD² (cubic polynomial
  kernel, :func:`mmd2_unbiased`) averaged over the subsets of :func:`kid_subsets`; float64."""
  x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"features must be (n, d) with the same d, got {x.shape} and {y.shape}")
  subsets = kid_subsets(len(x), len(y), num_subsets, subset_size, seed)
  if len(x) + len(y) <= _KID_GRAM_MAX_POINTS:
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    values = [_mmd2(kxx[np.ix_(i, i)], kyy[np.ix_(j, j)], kxy[np.ix_(i, j)]) for i, j in subsets]
  else:
    values = [mmd2_unbiased(x[i], y[j]) for i, j in subsets]
  return KID(float(np.mean(values)), float(np.std(values)), len(subsets[0][0]), len(values))


# --------------------------------------------------------------------------------------------
# Features.
# --------------------------------------------------------------------------------------------


def missing_weights_message(path) -> str:
  return (
    f"FID weights not found: {path!s}. Give --weights=PATH to pytorch-fid's "
    f"{FID_WEIGHTS_FILENAME} (published at {FID_WEIGHTS_URL}; it cannot be downloaded at "
    "run time here, fetch it elsewhere and pass its path)"
  )


def load_weights(path) -> dict:
  """Flax variables from a FID weight file (.pth read without torch, or .npz); FIDError if bad."""
  if path is None or not os.path.isfile(path):
    raise FIDError(missing_weights_message(path))
  try:
    return inception.load_variables(path)
  except (inception.WeightsError, inception.UnsafePickleError) as e:
    raise FIDError(f"{path}: {e}") from None
  except (OSError, ValueError, EOFError) as e:
    raise FIDError(f"{path}: cannot read weight file: {e}") from None


@functools.lru_cache(maxsize=None)
def _jitted_network(precision):
  """One jitted network per precision, shared by all extractors (compiled once per shape)."""
  model = inception.FIDInceptionV3(precision=precision)
  return jax.jit(lambda v, x: model.apply(v, x, preprocess_input=False))


_jitted_preprocess = jax.jit(inception.preprocess)


class InceptionFeatureExtractor:
  """Jitted, batched FID Inception pool3 features.

  Batches are padded to ``batch_size`` (by repeating the last image) so that the network is
  compiled once per image size; the output is float32 (n, 2048).
  """

  def __init__(
    self, variables: dict, batch_size: int = DEFAULT_BATCH_SIZE, precision=jax.lax.Precision.HIGHEST
  ):
    if batch_size < 1:
      raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    self.variables = jax.device_put(variables)
    self.batch_size = int(batch_size)
    self._net = _jitted_network(precision)
    self._prep = _jitted_preprocess

  @classmethod
  def from_weights(cls, path, batch_size: int = DEFAULT_BATCH_SIZE) -> "InceptionFeatureExtractor":
    return cls(load_weights(path), batch_size)

  def _run_batch(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
    n = batch.shape[0]
    if n < batch_size:
      pad = np.repeat(batch[-1:], batch_size - n, axis=0)
      batch = np.concatenate([batch, pad], axis=0)
    return np.asarray(self._net(self.variables, self._prep(batch)))[:n]

  def __call__(self, images, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Features of images (N, H, W, C), C ∈ {1, 3}; uint8 (0..255) or float in ``value_range``."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"images must be (N, H, W, 1|3), got shape {images.shape}")
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8:
      lo, hi = value_range
      images = images.astype(np.float32)
      if (lo, hi) != (0.0, 1.0):
        images = (images - np.float32(lo)) / np.float32(hi - lo)
    n = images.shape[0]
    if n == 0:
      return np.zeros((0, inception.FEATURE_DIM), np.float32)
    bs = min(self.batch_size, n)
    return np.concatenate([self._run_batch(images[i : i + bs], bs) for i in range(0, n, bs)])

  def features_of_files(
    self, files: Sequence[os.PathLike | str], log_every: int = 10, name: str = ""
  ) -> np.ndarray:
    """Features of image files (read as RGB like pytorch-fid), streamed batch by batch.

    Logs progress every ``log_every`` batches (and at the end) at INFO level.
    """
    files = list(files)
    n = len(files)
    bs = min(self.batch_size, max(n, 1))
    out = []
    n_batches = (n + bs - 1) // bs
    for b, i in enumerate(range(0, n, bs)):
      images = [read_image(p) for p in files[i : i + bs]]
      # A batch can only hold one image size: run each same-size run separately.
      start = 0
      while start < len(images):
        stop = start + 1
        while stop < len(images) and images[stop].shape == images[start].shape:
          stop += 1
        out.append(self._run_batch(np.stack(images[start:stop]), bs))
        start = stop
      done = min(i + bs, n)
      if (b + 1) % max(log_every, 1) == 0 or b + 1 == n_batches:
        logger.info("%s%d/%d images", f"{name}: " if name else "", done, n)
    if not out:
      return np.zeros((0, inception.FEATURE_DIM), np.float32)
    return np.concatenate(out)


def read_image(path) -> np.ndarray:
  """An image file as uint8 RGB (H, W, 3); FIDError naming the file if it cannot be read."""
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise FIDError(f"cannot read image {path}: {e}") from None


def list_images(folder) -> list[pathlib.Path]:
  """Image files directly in ``folder`` (not recursive), sorted; FIDError if there are none."""
  folder = pathlib.Path(folder)
  files = sorted(
    p for p in folder.iterdir() if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS
  )
  if not files:
    raise FIDError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
  if len(files) < 2:
    raise FIDError(f"{folder}: FID needs at least 2 images, found {len(files)}")
  return files


def fid_from_images(
  images1,
  images2,
  extractor: InceptionFeatureExtractor,
  value_range: tuple[float, float] = (0.0, 1.0),
) -> float:
  """FID between two image arrays (N, H, W, C) — e.g. generated vs real, in ``value_range``."""
  return fid_from_features(extractor(images1, value_range), extractor(images2, value_range))


# --------------------------------------------------------------------------------------------
# Paths (folders or .npz statistics) and the command.
# --------------------------------------------------------------------------------------------


def _is_stats(path) -> bool:
  return str(path).endswith(".npz")


def load_statistics(path) -> tuple[np.ndarray, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      if "mu" not in f.files or "sigma" not in f.files:
        raise FIDError(f"{path}: an .npz of statistics needs arrays 'mu' and 'sigma'")
      return np.asarray(f["mu"]), np.asarray(f["sigma"])
  except (OSError, ValueError) as e:
    raise FIDError(f"{path}: cannot read statistics: {e}") from None


def _stats_or_features(path, get_extractor, log_every):
  if _is_stats(path):
    return "stats", load_statistics(path)
  files = list_images(path)
  return "features", get_extractor().features_of_files(files, log_every=log_every, name=str(path))


def statistics_of_path(
  path, get_extractor: Callable[[], InceptionFeatureExtractor], log_every: int = 10
) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of an .npz of statistics or of a folder of images."""
  kind, value = _stats_or_features(path, get_extractor, log_every)
  return value if kind == "stats" else compute_statistics(value)


def _check_exists(paths: Iterable[str]) -> None:
  for p in paths:
    if not os.path.exists(p):
      raise FIDError(f"invalid path: {p} does not exist")
    if not _is_stats(p) and not os.path.isdir(p):
      raise FIDError(f"invalid path: {p} is neither a folder of images nor an .npz of statistics")


def _extractor_factory(weights, batch_size) -> Callable[[], InceptionFeatureExtractor]:
  @functools.lru_cache(maxsize=None)
  def get():
    return InceptionFeatureExtractor(load_weights(weights), batch_size)

  return get


def fid_of_paths(
  path1, path2, weights=None, batch_size: int = DEFAULT_BATCH_SIZE, log_every: int = 10
) -> float:
  """FID between two paths (folders of images or .npz of mu/sigma), like pytorch-fid."""
  paths = [str(path1), str(path2)]
  _check_exists(paths)
  for p in paths:  # fail on an empty folder before loading weights
    if not _is_stats(p):
      list_images(p)
  if any(not _is_stats(p) for p in paths) and (weights is None or not os.path.isfile(weights)):
    raise FIDError(missing_weights_message(weights))
  get = _extractor_factory(weights, batch_size)
  (k1, v1), (k2, v2) = (_stats_or_features(p, get, log_every) for p in paths)
  try:
    if k1 == k2 == "features":
      return fid_from_features(v1, v2)
    s1 = v1 if k1 == "stats" else compute_statistics(v1)
    s2 = v2 if k2 == "stats" else compute_statistics(v2)
    return frechet_distance(*s1, *s2)
  except ValueError as e:
    raise FIDError(f"cannot compare {paths[0]} and {paths[1]}: {e}") from None


def load_features(path) -> np.ndarray:
  """The ``features`` array of an .npz written by ``--save-stats --kid``; FIDError if absent."""
  try:
    with np.load(path, allow_pickle=False) as f:
      if "features" not in f.files:
        raise FIDError(
          f"{path}: KID needs the images' features and this .npz holds only "
          "statistics; give the folder, or save the .npz with --save-stats --kid"
        )
      return np.asarray(f["features"])
  except (OSError, ValueError) as e:
    raise FIDError(f"{path}: cannot read features: {e}") from None


def _features_of_path(path, get_extractor, log_every) -> np.ndarray:
  if _is_stats(path):
    return load_features(path)
  return get_extractor().features_of_files(list_images(path), log_every=log_every, name=str(path))


def fid_kid_of_paths(
  path1,
  path2,
  weights=None,
  batch_size: int = DEFAULT_BATCH_SIZE,
  log_every: int = 10,
  num_subsets: int = KID_NUM_SUBSETS,
  subset_size: int = KID_SUBSET_SIZE,
  seed: int = 0,
) -> tuple[float, KID]:
  """FID and KID between two paths (folders of images, or .npz with ``features``) from the
  same Inception features."""
  paths = [str(path1), str(path2)]
  _check_exists(paths)
  for p in paths:  # fail on an empty folder or a statistics-only .npz before loading weights
    if _is_stats(p):
      load_features(p)
    else:
      list_images(p)
  if any(not _is_stats(p) for p in paths) and (weights is None or not os.path.isfile(weights)):
    raise FIDError(missing_weights_message(weights))
  get = _extractor_factory(weights, batch_size)
  f1, f2 = (_features_of_path(p, get, log_every) for p in paths)
  try:
    return fid_from_features(f1, f2), kid_from_features(f1, f2, num_subsets, subset_size, seed)
  except ValueError as e:
    raise FIDError(f"cannot compare {paths[0]} and {paths[1]}: {e}") from None


def save_statistics(
  path,
  output,
  weights=None,
  batch_size: int = DEFAULT_BATCH_SIZE,
  log_every: int = 10,
  with_features: bool = False,
) -> str:
  """Writes mu/sigma of ``path`` to ``output`` (.npz appended if missing); returns the file name.
  ``with_features`` also writes the features themselves (``features``, what KID needs)."""
  path, output = str(path), str(output)
  _check_exists([path])
  if not output.endswith(".npz"):
    output += ".npz"
  if os.path.exists(output):
    raise FIDError(f"existing output file: {output}")
  if not _is_stats(path):
    list_images(path)
    if weights is None or not os.path.isfile(weights):
      raise FIDError(missing_weights_message(weights))
  get = _extractor_factory(weights, batch_size)
  if with_features:
    features = _features_of_path(path, get, log_every)
    mu, sigma = compute_statistics(features)
    np.savez_compressed(output, mu=mu, sigma=sigma, features=features)
    return output
  mu, sigma = statistics_of_path(path, get, log_every)
  np.savez_compressed(output, mu=mu, sigma=sigma)
  return output


FLAGS = flags.FlagValues()
# pytorch-fid's spellings (hyphens; "--batch-size 50" or "--batch-size=50").
flags.DEFINE_string(
  "weights",
  None,
  f"pytorch-fid's {FID_WEIGHTS_FILENAME} (or an .npz of that state dict); "
  f"published at {FID_WEIGHTS_URL}",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "batch-size", DEFAULT_BATCH_SIZE, "Images per batch.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_bool(
  "save-stats",
  False,
  "Compute the statistics of the first path and save them to the second.",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "log-every", 10, "Report progress every N batches (on stderr).", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_bool(
  "kid",
  False,
  "Also print the Kernel Inception Distance from the same features (needs "
  "folders of images, or .npz files saved with --save-stats --kid); with "
  "--save-stats, also save the features.",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "kid-subsets", KID_NUM_SUBSETS, "KID: number of subsets.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
  "kid-subset-size",
  KID_SUBSET_SIZE,
  "KID: images per subset, at most the smaller set.",
  lower_bound=2,
  flag_values=FLAGS,
)


class _StderrHandler(logging.StreamHandler):
  """Progress lines to the ``sys.stderr`` of the moment, not the one of the first call (so a
  caller that redirects stderr later, as pytest's capture does, still gets them)."""

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):
    del value  # always sys.stderr


def main(argv: Sequence[str]) -> None:
  """absl's main: ``argv[1:]`` are the two paths."""
  paths = argv[1:]
  if len(paths) != 2:
    raise errors.CommandLineError(
      f"give two paths (folders of images or .npz statistics), got {len(paths)}"
      + (f": {' '.join(paths)}" if paths else "")
    )
  if not logger.handlers:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False  # absl's handler on the root logger would print them again
  logger.setLevel(logging.INFO)
  # Like pytorch-fid: the progress lines above, not the INFO lines of JAX and absl.
  absl_logging.set_verbosity(absl_logging.WARNING)
  weights = FLAGS.weights
  batch_size, log_every = FLAGS["batch-size"].value, FLAGS["log-every"].value
  if FLAGS["save-stats"].value:
    out = save_statistics(
      paths[0], paths[1], weights, batch_size, log_every, with_features=FLAGS.kid
    )
    print(f"Saved statistics{' and features' if FLAGS.kid else ''} of {paths[0]} to {out}")
  elif FLAGS.kid:
    fid, kid = fid_kid_of_paths(
      paths[0],
      paths[1],
      weights,
      batch_size,
      log_every,
      FLAGS["kid-subsets"].value,
      FLAGS["kid-subset-size"].value,
    )
    print(f"FID: {fid}")
    print(
      f"KID: {kid.kid} (std {kid.std} over {kid.num_subsets} subsets of {kid.subset_size} images)"
    )
  else:
    fid = fid_of_paths(paths[0], paths[1], weights, batch_size, log_every)
    print(f"FID: {fid}")


if __name__ == "__main__":
  cli.run(main, FLAGS, positional=True)

"""Deterministic stand-in weights for the FID Inception-V3, numpy only (no torch, no jax).

The real FID weights (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, ~95 MB) cannot be
committed or downloaded here. The agreement fixture (``tests/fixtures/fid_reference.npz``, made
by ``tests/make_fid_fixture.py`` with torch + pytorch-fid) therefore runs pytorch-fid's network
on weights drawn from this generator, and the tests regenerate the same weights with numpy alone.

Every tensor is drawn from its own stream, seeded by (seed, crc32(key)), so a value does not
depend on which other keys exist or on their order. Every conv/fc weight and every BatchNorm
weight, bias, running_mean and running_var is non-trivial (BN is not the identity), and the
scales keep activations O(1) through the ~50 layers (He-scaled convs, BN gains near 1).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Mapping

import numpy as np

DEFAULT_SEED = 20151205


def _rng(key: str, seed: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def fixture_tensor(key: str, shape: Iterable[int], seed: int = DEFAULT_SEED) -> np.ndarray:
  """The stand-in value of state-dict entry ``key`` (torch layout and dtype)."""
  shape = tuple(int(s) for s in shape)
  rng = _rng(key, seed)
  leaf = key.rsplit(".", 1)[-1]
  if leaf == "num_batches_tracked":
    return np.asarray(rng.integers(1, 1 << 40), np.int64).reshape(shape)
  if key.endswith("conv.weight"):
    fan_in = int(np.prod(shape[1:]))
    return (
      rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    ).astype(np.float32)
  if key == "fc.weight":
    return (
      rng.standard_normal(shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(shape[1]))
    ).astype(np.float32)
  if key == "fc.bias":
    return (0.01 * rng.standard_normal(shape)).astype(np.float32)
  if leaf == "weight":  # BN gamma
    return rng.uniform(0.6, 1.4, shape).astype(np.float32)
  if leaf == "bias":  # BN beta
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)
  if leaf == "running_mean":
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)
  if leaf == "running_var":
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)
  raise KeyError(f"no stand-in rule for state-dict key {key!r}")


def fixture_state_dict(
  spec: Mapping[str, Iterable[int]], seed: int = DEFAULT_SEED
) -> dict[str, np.ndarray]:
  """{key: fixture_tensor(key, shape)} for a spec {key: shape}."""
  return {k: fixture_tensor(k, s, seed) for k, s in spec.items()}


def checksum(state_dict: Mapping[str, np.ndarray]) -> np.ndarray:
  """Per-key float64 sums in sorted key order: detects a change of numpy's random streams."""
  return np.array([np.asarray(state_dict[k], np.float64).sum() for k in sorted(state_dict)])


def fixture_images(seed: int, n: int, height: int, width: int) -> np.ndarray:
  """Smooth deterministic uint8 RGB images (n, H, W, 3): blobs and gradients, not white noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
  out = np.empty((n, height, width, 3), np.float64)
  for i in range(n):
    img = np.zeros((height, width, 3))
    for _ in range(4):
      cy, cx = rng.uniform(0, 1, 2)
      r = rng.uniform(0.08, 0.4)
      col = rng.uniform(-1, 1, 3)
      img += col * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    g = rng.uniform(-0.5, 0.5, 3)
    img += g * (yy[..., None] * rng.uniform(-1, 1) + xx[..., None] * rng.uniform(-1, 1))
    img += 0.05 * rng.standard_normal(img.shape)
    out[i] = img
  out = (out - out.min()) / (out.max() - out.min())
  return np.round(out * 255).astype(np.uint8)


def save_weights_npz(path) -> None:
  """The stand-in weights for every tensor of the FID Inception port, as the ``.npz`` state
  dict that ``python -m attrdis.fid --weights`` reads."""
  from attrdis import inception  # pylint: disable=g-import-not-at-top  (module stays numpy-only)

  np.savez(path, **fixture_state_dict(inception.state_dict_spec()))


def run_fid_command(capsys, *argv):
  """``python -m attrdis.fid ARGV`` in this process: (exit status, stdout, stderr)."""
  from attrdis import cli  # pylint: disable=g-import-not-at-top
  from attrdis import fid  # pylint: disable=g-import-not-at-top

  rc = cli.call(fid.main, fid.FLAGS, argv, positional=True)
  out, err = capsys.readouterr()
  return rc, out, err

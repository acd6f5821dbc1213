"""Image errors, and the reconstruction metric: ``recon/l1``, ``recon/psnr`` of Dec(Enc(x))
against x on the test split (L1 in [0, 1] pixel units, PSNR with peak 1, means over images)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attrdis.evaluation import context as context_lib
from attrdis.evaluation import networks


@jax.jit
def _image_errors(a, b):
  d = (a.astype(jnp.float32) - b.astype(jnp.float32)) / 2.0  # [0, 1] pixel units
  axes = tuple(range(1, d.ndim))
  l1 = jnp.mean(jnp.abs(d), axis=axes)
  mse = jnp.mean(d * d, axis=axes)
  psnr = 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))
  return l1, psnr


def image_errors(pred, truth) -> tuple[np.ndarray, np.ndarray]:
  """Per image: L1 (mean |Δ| in [0, 1] pixel units) and PSNR (dB, peak 1; capped at 100 dB
  for identical images) of images in [-1, 1] (n, H, W, C)."""
  pred, truth = np.asarray(pred, np.float32), np.asarray(truth, np.float32)
  if pred.shape != truth.shape:
    raise ValueError(f"shapes differ: {pred.shape} vs {truth.shape}")
  l1, psnr = _image_errors(jnp.asarray(pred), jnp.asarray(truth))
  return np.asarray(l1, np.float64), np.asarray(psnr, np.float64)


def reconstruction(ctx: context_lib.Context) -> dict[str, float]:
  """``recon/l1``, ``recon/psnr`` on the test split."""
  l1, psnr = image_errors(ctx.encode().recon, networks.to_float(ctx.test.images))
  return {"recon/l1": float(l1.mean()), "recon/psnr": float(psnr.mean())}

"""Code-level operations on a trained generator: encode, decode, transfer, grids.

Codes are the list ``[z_1, ..., z_M, z_0]``; an attribute is addressed by its index
k = 0..M-1 in ``config.dataset.attributes``, and ``rest`` (z_0) by k = M.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from attrdis.train_state import Models


def encode(models: Models, gen_params, x: jax.Array) -> list[jax.Array]:
  return models.gen.apply({"params": gen_params}, x, method="encode")


def decode(models: Models, gen_params, codes: Sequence[jax.Array]) -> jax.Array:
  return models.gen.apply({"params": gen_params}, list(codes), method="decode")


def transfer_codes(source: Sequence[jax.Array], target: Sequence[jax.Array],
                   take: Sequence[int]) -> list[jax.Array]:
  """The source's codes with the codes at indices ``take`` replaced by the target's."""
  take = set(take)
  return [t if k in take else s for k, (s, t) in enumerate(zip(source, target))]


def monitoring_rows(models: Models, gen_params, x: jax.Array) -> jax.Array:
  """The training monitor (as the authors' code showed it), shape (3 + M, n, S, S, 3):

  inputs; targets (the inputs rolled by one); reconstructions; then for each attribute
  m, each input decoded with attribute m's code taken from its target.
  """
  codes = encode(models, gen_params, x)
  targets = [jnp.roll(z, 1, axis=0) for z in codes]
  rows = [x, jnp.roll(x, 1, axis=0), decode(models, gen_params, codes)]
  for m in range(models.num_attributes):
    rows.append(decode(models, gen_params, transfer_codes(codes, targets, [m])))
  return jnp.stack(rows)

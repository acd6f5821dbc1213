"""Code-level operations on a trained generator: encode, decode, transfer, interpolate, mix.

Codes are the list ``[z_1, ..., z_M, z_0]``; an attribute is addressed by its index
k = 0..M-1 in ``config.dataset.attributes``, and ``rest`` (z_0) by k = M.

Every image this module makes is the decoding of codes that are, slot by slot, weighted
sums of codes of known images (or of class-mean codes): transfer takes slot k from another
image (weight 1), interpolation (Eq. 12) and mixtures (Eq. 11) take convex combinations.
:class:`Sampler` runs all of them through one jitted, batched "gather, weight, decode"
function and returns, with the images, the recipe of each (which input and weight made
each code slot), so that callers can say how every image was made. :func:`decode_batched`
decodes codes that are already made (``Sampler.decode``; the evaluator's transfers).

``mean_codes`` / ``load_or_compute_mean_codes`` give the class-mean code of an attribute
over a dataset split, E_i[z_m^(i)] (how the paper makes its model label-conditioned for
Table IV); they are cached in ``workdir/mean_codes/step_<N>.npz``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from attrdis import errors
from attrdis.train_state import Models

REST = "rest"  # the name of z_0 wherever attributes are named


class SamplingError(errors.InputError):
  """A bad request (unknown attribute, bad weights, ...); the message is one line."""


# ----------------------------------------------------------------------------------------
# Pure code-level operations.


def encode(models: Models, gen_params, x: jax.Array) -> list[jax.Array]:
  return models.gen.apply({"params": gen_params}, x, method="encode")


def decode(models: Models, gen_params, codes: Sequence[jax.Array]) -> jax.Array:
  return models.gen.apply({"params": gen_params}, list(codes), method="decode")


def transfer_codes(
  source: Sequence[jax.Array], target: Sequence[jax.Array], take: Sequence[int]
) -> list[jax.Array]:
  """The source's codes with the codes at indices ``take`` replaced by the target's."""
  take = set(take)
  return [t if k in take else s for k, (s, t) in enumerate(zip(source, target))]


def interpolate_codes(
  source: Sequence[jax.Array], target: Sequence[jax.Array], take: Sequence[int], alpha
) -> list[jax.Array]:
  """Eq. 12: the codes at ``take`` go linearly from the source's (alpha 0) to the target's
  (alpha 1), ``(1 - alpha) z_s + alpha z_t``; the other codes are the source's."""
  take = set(take)
  return [
    (1.0 - alpha) * s + alpha * t if k in take else s
    for k, (s, t) in enumerate(zip(source, target))
  ]


def mix_codes(codes: Sequence[jax.Array], k: int, weights) -> list[jax.Array]:
  """Eq. 11: code k becomes ``sum_i weights[i] z_k^(i)`` over the batch of ``codes``; the
  other codes are the first image's. ``weights`` (n,) gives one set of codes (batch 1)."""
  w = jnp.asarray(weights, jnp.float32)
  out = [z[:1] for z in codes]
  out[k] = jnp.tensordot(w, codes[k], axes=1, precision=jax.lax.Precision.HIGHEST)[None]
  return out


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


# ----------------------------------------------------------------------------------------
# Names and weights.


def code_names(attributes: Sequence[str]) -> tuple[str, ...]:
  """The names of the code slots: the attributes, then ``rest``."""
  return tuple(attributes) + (REST,)


def attribute_indices(
  requested: Iterable[str], attributes: Sequence[str], allow_rest: bool = True
) -> list[int]:
  """Code-slot indices of attribute names (``rest`` = z_0 = M), in the order given."""
  names = code_names(attributes) if allow_rest else tuple(attributes)
  out = []
  for a in requested:
    a = a.strip()
    if a not in names:
      what = "attribute" if a != REST else "code"
      raise SamplingError(f"{what} {a!r} is not one of this model's: {', '.join(names)}")
    k = names.index(a)
    if k in out:
      raise SamplingError(f"attribute {a!r} is named twice")
    out.append(k)
  return out


def check_weights(weights, count: int, tolerance: float = 1e-3) -> np.ndarray:
  """Convex weights as float64 (N, count): non-negative, each row summing to one (within
  ``tolerance``, then renormalised). Raises SamplingError otherwise."""
  w = np.asarray(weights, dtype=np.float64)
  if w.ndim == 1:
    w = w[None]
  if w.ndim != 2 or w.shape[1] != count:
    got = w.shape[-1] if w.ndim else 1
    raise SamplingError(f"{got} weights given for {count} images; give one weight per image")
  if not np.all(np.isfinite(w)):
    raise SamplingError("weights must be finite numbers")
  if np.any(w < 0):
    raise SamplingError(f"weights must not be negative (got {_fmt(w[np.any(w < 0, axis=1)][0])})")
  sums = w.sum(axis=1)
  bad = np.abs(sums - 1.0) > tolerance
  if np.any(bad):
    raise SamplingError(
      f"weights must sum to 1 (a convex combination, Eq. 11); "
      f"{_fmt(w[bad][0])} sums to {sums[bad][0]:g}"
    )
  return w / sums[:, None]


def random_convex_weights(count: int, num: int, seed: int) -> np.ndarray:
  """``num`` random convex weights over ``count`` images, (num, count): uniform on the
  simplex (Dirichlet(1, ..., 1)), so every weight is positive, as Eq. 11 asks."""
  rng = np.random.default_rng(seed)
  w = rng.dirichlet(np.ones(count), size=num)
  return w / w.sum(axis=1, keepdims=True)


def random_donors(pool_size: int, num: int, num_codes: int, seed: int) -> np.ndarray:
  """(num, num_codes) indices into a pool: for each new image, a different random image
  per code slot (distinct within the row when the pool is large enough)."""
  if pool_size < 1:
    raise SamplingError("the pool of images to draw codes from is empty")
  rng = np.random.default_rng(seed)
  replace = pool_size < num_codes
  return np.stack(
    [rng.choice(pool_size, size=num_codes, replace=replace) for _ in range(num)]
  ).astype(np.int64)


def _fmt(w) -> str:
  return ",".join(f"{x:g}" for x in np.ravel(w))


# ----------------------------------------------------------------------------------------
# Jitted kernels (the generator module is static: equal configs share compilations).


@functools.partial(jax.jit, static_argnames=("gen",))
def _encode_jit(gen, gen_params, x):
  return gen.apply({"params": gen_params}, x, method="encode")


@functools.partial(jax.jit, static_argnames=("gen",))
def _decode_jit(gen, gen_params, codes):
  return gen.apply({"params": gen_params}, list(codes), method="decode")


@functools.partial(jax.jit, static_argnames=("gen",))
def _render_jit(gen, gen_params, banks, index, weight):
  """banks: tuple of M+1 arrays (N_m, h, w, c); index, weight: (M+1, B, P).
  Slot m of output b is sum_p weight[m, b, p] * banks[m][index[m, b, p]]."""
  codes = [
    jnp.sum(weight[m][:, :, None, None, None] * bank[index[m]], axis=1)
    for m, bank in enumerate(banks)
  ]
  return gen.apply({"params": gen_params}, codes, method="decode")


@functools.partial(jax.jit, static_argnames=("gen", "k"))
def _class_sums_jit(gen, gen_params, x, onehot, k):
  """Sum over the batch of code k per class: (C, h, w, c); rows of ``onehot`` may be 0."""
  z = gen.apply({"params": gen_params}, x, method=lambda mod, x: mod.encoders[k](x))
  return jnp.einsum(
    "bc,bhwk->chwk", onehot, z.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
  )


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
  if len(x) == size:
    return x
  pad = np.zeros((size - len(x),) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad])


def decode_batched(
  models: Models,
  gen_params,
  codes: Sequence[Any],
  batch_size: int,
  on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
  """Images (n, S, S, 3) in [-1, 1] of codes given per slot as (n, h, w, c) arrays, decoded
  ``batch_size`` at a time (the last batch padded, so one compilation serves every batch);
  ``on_batch(done, n)`` is called after each batch."""
  n = int(codes[0].shape[0])
  out = []
  for start in range(0, n, batch_size):
    chunk = [_pad_to(np.asarray(z[start : start + batch_size]), batch_size) for z in codes]
    out.append(np.asarray(_decode_jit(models.gen, gen_params, chunk)))
    if on_batch is not None:
      on_batch(min(start + batch_size, n), n)
  return np.concatenate(out)[:n]


# ----------------------------------------------------------------------------------------
# Recipes: how each generated image was made.

Term = tuple[str, int, float]  # (role, index in that role's images, weight)
Recipe = tuple[tuple[Term, ...], ...]  # one tuple of terms per code slot


@dataclasses.dataclass
class Samples:
  """Generated images and how each was made.

  ``images``: float32 (*shape, S, S, 3) in [-1, 1]. ``recipes``: a nested list of that
  ``shape`` whose leaves are Recipes: for each code slot (attributes, then rest) the terms
  ``(role, i, weight)`` summed to make it, where role names the inputs of the call
  ('source', 'target', 'onto', 'pool', or 'class' for class-mean codes) and ``i`` indexes
  them.
  """

  images: np.ndarray
  recipes: Any


class Sampler:
  """A trained generator, batched and jitted: encodes images, makes new codes, decodes.

  Images are float32 (n, S, S, 3) in [-1, 1] (see ``attrdis.image_io``). Work is done in
  batches of ``batch_size`` (the last one padded, so one compilation serves every batch);
  progress is logged every ``log_every`` images.
  """

  def __init__(self, models: Models, gen_params, batch_size: int = 32, log_every: int = 256):
    if batch_size < 1:
      raise SamplingError(f"batch size must be positive, got {batch_size}")
    self.models = models
    self.gen_params = gen_params
    self.batch_size = int(batch_size)
    self.log_every = log_every
    self.num_codes = models.num_attributes + 1

  @classmethod
  def from_trained(cls, trained, **kwargs) -> "Sampler":
    """From ``attrdis.checkpoints.load_trained(workdir)``."""
    return cls(trained.models, trained.params["gen"], **kwargs)

  # -- basic operations

  def _progress(self, verb: str, done: int, total: int) -> None:
    """Logs ``done/total`` when a multiple of ``log_every`` images was passed (and at the end)."""
    every = max(self.log_every, 1)
    if total > self.batch_size and (
      done == total or done // every != (done - self.batch_size) // every
    ):
      logging.info("%s %d/%d images", verb, done, total)

  def encode(self, images) -> list[jax.Array]:
    """Codes [z_1..z_M, z_0] of ``images``; each (n_padded, h, w, c), padded with the codes
    of zero images up to a multiple of the batch size (index them with 0..n-1)."""
    images = np.asarray(images, np.float32)
    n, b = len(images), self.batch_size
    if n == 0:
      raise SamplingError("no images to encode")
    chunks = []
    for start in range(0, n, b):
      x = _pad_to(images[start : start + b], b)
      chunks.append(_encode_jit(self.models.gen, self.gen_params, jnp.asarray(x)))
      self._progress("encoded", min(start + b, n), n)
    return [jnp.concatenate([c[m] for c in chunks]) for m in range(self.num_codes)]

  def decode(self, codes: Sequence[jax.Array]) -> np.ndarray:
    """Images of a batch of codes (any batch size, decoded ``batch_size`` at a time)."""
    return decode_batched(
      self.models,
      self.gen_params,
      codes,
      self.batch_size,
      lambda done, n: self._progress("decoded", done, n),
    )

  def reconstruct(self, images) -> np.ndarray:
    """Dec(Enc(x)) of each image."""
    n = len(images)
    return self.decode([z[:n] for z in self.encode(images)])

  def render(
    self, codes: Mapping[str, Mapping[int, jax.Array]], recipes: Sequence[Recipe]
  ) -> np.ndarray:
    """Decodes one image per recipe. ``codes[role][m]`` holds the slot-m codes of that
    role's inputs (a (n, h, w, c) array), which the recipes' terms index."""
    m_codes = self.num_codes
    # Each slot's bank: the codes of every role that has that slot, one after the other.
    banks, offsets = [], []
    for m in range(m_codes):
      parts, offset, at = [], {}, 0
      for role in sorted(codes):
        if m in codes[role]:
          offset[role] = at
          parts.append(jnp.asarray(codes[role][m], jnp.float32))
          at += parts[-1].shape[0]
      banks.append(jnp.concatenate(parts) if len(parts) > 1 else parts[0])
      offsets.append(offset)
    n = len(recipes)
    p = max(len(terms) for r in recipes for terms in r)
    index = np.zeros((m_codes, n, p), np.int32)
    weight = np.zeros((m_codes, n, p), np.float32)
    for i, recipe in enumerate(recipes):
      if len(recipe) != m_codes:
        raise ValueError(f"a recipe has {len(recipe)} slots; the model has {m_codes}")
      for m, terms in enumerate(recipe):
        for j, (role, idx, w) in enumerate(terms):
          if role not in offsets[m]:
            raise ValueError(f"no {role!r} codes for slot {m}")
          index[m, i, j] = offsets[m][role] + idx
          weight[m, i, j] = w
    b, out = self.batch_size, []
    for start in range(0, n, b):
      idx = np.zeros((m_codes, b, p), np.int32)
      wgt = np.zeros((m_codes, b, p), np.float32)
      idx[:, : min(b, n - start)] = index[:, start : start + b]
      wgt[:, : min(b, n - start)] = weight[:, start : start + b]
      out.append(
        np.asarray(
          _render_jit(
            self.models.gen, self.gen_params, tuple(banks), jnp.asarray(idx), jnp.asarray(wgt)
          )
        )
      )
      self._progress("generated", min(start + b, n), n)
    return np.concatenate(out)[:n]

  def _all(self, codes) -> dict[int, jax.Array]:
    return dict(enumerate(codes))

  def _slots(self, take: Iterable[int]) -> set[int]:
    take = {int(k) for k in take}
    bad = [k for k in take if not 0 <= k < self.num_codes]
    if bad:
      raise SamplingError(
        f"code index {bad[0]} out of range: the model has {self.num_codes} "
        f"codes (0..{self.num_codes - 1}, the last being rest)"
      )
    return take

  def _samples(self, codes, recipes: list[Recipe], shape: tuple[int, ...]) -> Samples:
    images = self.render(codes, recipes)
    images = images.reshape(shape + images.shape[1:])
    nested: Any = recipes
    for d in reversed(shape[1:]):
      nested = [nested[i : i + d] for i in range(0, len(nested), d)]
    return Samples(images=images, recipes=nested)

  # -- the modes

  def transfer(self, sources, targets, take: Sequence[int]) -> Samples:
    """Each source decoded with the codes at ``take`` taken from each target (no labels):
    images (n_sources, n_targets, S, S, 3)."""
    ns, nt = len(sources), len(targets)
    take = self._slots(take)
    codes = {"source": self._all(self.encode(sources)), "target": self._all(self.encode(targets))}
    recipes = [
      tuple(
        (("target", j, 1.0),) if m in take else (("source", i, 1.0),) for m in range(self.num_codes)
      )
      for i in range(ns)
      for j in range(nt)
    ]
    return self._samples(codes, recipes, (ns, nt))

  def interpolate(self, sources, targets, take: Sequence[int], steps: int, onto=None) -> Samples:
    """Eq. 12 between pairs (source i, target i), a lone source or target being paired with
    every image of the other: the codes at ``take`` go from the source's (column 0) to the
    target's (column steps-1) in ``steps`` equal steps; the other codes are the source's,
    or ``onto``'s (one image, or one per pair) when given (Figs. 10-12). Images
    (num_pairs, steps, S, S, 3)."""
    take = self._slots(take)
    if steps < 2:
      raise SamplingError(f"--steps must be at least 2 (the two endpoints), got {steps}")
    ns, nt = len(sources), len(targets)
    if ns != nt and 1 not in (ns, nt):
      raise SamplingError(f"{ns} sources and {nt} targets: give as many of each, or one of either")
    pairs = max(ns, nt)
    codes = {"source": self._all(self.encode(sources)), "target": self._all(self.encode(targets))}
    no = 0
    if onto is not None:
      no = len(onto)
      if no not in (1, pairs):
        raise SamplingError(f"{no} --onto images for {pairs} pairs: give one, or one per pair")
      codes["onto"] = self._all(self.encode(onto))
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float64)
    recipes = []
    for q in range(pairs):
      i, j = (q if ns > 1 else 0), (q if nt > 1 else 0)
      base = ("onto", q if no > 1 else 0) if onto is not None else ("source", i)
      for a in alphas:
        recipes.append(
          tuple(
            (("source", i, float(1.0 - a)), ("target", j, float(a)))
            if m in take
            else ((base[0], base[1], 1.0),)
            for m in range(self.num_codes)
          )
        )
    return self._samples(codes, recipes, (pairs, steps))

  def mix(self, images, k: int, weights) -> Samples:
    """Eq. 11: code k a convex combination of the images' codes k, one output per row of
    ``weights`` (num, n) (checked by ``check_weights``), the other codes the first image's.
    Images (num, S, S, 3)."""
    n = len(images)
    (k,) = self._slots([k])
    w = check_weights(weights, n)
    codes = {"source": self._all(self.encode(images))}
    recipes = [
      tuple(
        tuple(("source", i, float(row[i])) for i in range(n)) if m == k else (("source", 0, 1.0),)
        for m in range(self.num_codes)
      )
      for row in w
    ]
    return self._samples(codes, recipes, (len(w),))

  def to_classes(self, images, k: int, class_codes, classes: Sequence[int]) -> Samples:
    """Label-conditioned transfer: each image with code k replaced by ``class_codes[c]``
    (e.g. ``mean_codes``) for each c in ``classes``. Images (n, len(classes), S, S, 3)."""
    class_codes = np.asarray(class_codes, np.float32)
    empty = [c for c in classes if not np.all(np.isfinite(class_codes[c]))]
    if empty:
      raise SamplingError(f"class(es) {empty} have no mean code (no images of them)")
    n = len(images)
    codes = {"source": self._all(self.encode(images)), "class": {k: class_codes}}
    recipes = [
      tuple(
        (("class", int(c), 1.0),) if m == k else (("source", i, 1.0),)
        for m in range(self.num_codes)
      )
      for i in range(n)
      for c in classes
    ]
    return self._samples(codes, recipes, (n, len(classes)))

  def recombine(self, pool, donors) -> Samples:
    """New images whose code m is that of ``pool[donors[r, m]]`` (donors (num, M+1), e.g.
    ``random_donors``): the data-augmentation use. Images (num, S, S, 3)."""
    donors = np.asarray(donors)
    if donors.ndim != 2 or donors.shape[1] != self.num_codes:
      raise ValueError(f"donors must be (num, {self.num_codes}), got {donors.shape}")
    codes = {"pool": self._all(self.encode(pool))}
    recipes = [
      tuple((("pool", int(row[m]), 1.0),) for m in range(self.num_codes)) for row in donors
    ]
    return self._samples(codes, recipes, (len(donors),))


# ----------------------------------------------------------------------------------------
# Class-mean codes.


def _read_split(builder, split: str):
  """The data source of ``split`` (slices like ``train[:100]`` allowed) and its records'
  indices; see ``attrdis.image_io.split_source``."""
  from attrdis import image_io  # pylint: disable=g-import-not-at-top

  return image_io.split_source(builder, split)


def mean_codes(
  trained,
  builder,
  attribute_index: int,
  split: str = "train",
  batch_size: int = 64,
  return_counts: bool = False,
):
  """The mean code of each class of attribute ``attribute_index`` (0..M-1) over ``split``
  of ``builder``'s (prepared) dataset: float32 (num_classes, h, w, c); classes with no
  image in the split are NaN. Batched and jitted, encoder ``attribute_index`` only; the
  images go through the training pipeline's ``ToModelInputs``. With ``return_counts``
  also returns the images per class (num_classes,)."""
  from attrdis import input_pipeline  # pylint: disable=g-import-not-at-top

  config, models = trained.config, trained.models
  attributes = tuple(config.dataset.attributes)
  if not 0 <= attribute_index < len(attributes):
    raise SamplingError(
      f"attribute index {attribute_index}: the model has attributes "
      f"{', '.join(attributes)} (0..{len(attributes) - 1}); rest has no "
      "classes"
    )
  num_classes = models.num_classes[attribute_index]
  source, indices = _read_split(builder, split)
  if not indices:
    raise SamplingError(f"split {split!r} is empty")
  to_inputs = input_pipeline.ToModelInputs(attributes, config.image_size)
  gen_params = trained.params["gen"]
  sums = None
  counts = np.zeros((num_classes,), np.int64)
  n = len(indices)
  every = max(batch_size, n // 10)  # progress about every 10%
  logging.info("Mean %s codes over %d images of %s.", attributes[attribute_index], n, split)
  for start in range(0, n, batch_size):
    records = [to_inputs.map(source[i]) for i in indices[start : start + batch_size]]
    x = np.stack([r["image"] for r in records])
    labels = np.asarray([r["label"][attribute_index] for r in records])
    onehot = np.zeros((batch_size, num_classes), np.float32)
    onehot[np.arange(len(labels)), labels] = 1.0
    counts += onehot.sum(axis=0).astype(np.int64)
    batch_sums = np.asarray(
      _class_sums_jit(
        models.gen,
        gen_params,
        jnp.asarray(_pad_to(x, batch_size)),
        jnp.asarray(onehot),
        k=attribute_index,
      ),
      np.float64,
    )
    sums = batch_sums if sums is None else sums + batch_sums
    done = min(start + batch_size, n)
    if done == n or done // every != (done - len(records)) // every:
      logging.info("mean codes: encoded %d/%d images", done, n)
  with np.errstate(invalid="ignore", divide="ignore"):
    means = (sums / counts[:, None, None, None]).astype(np.float32)
  means[counts == 0] = np.nan
  return (means, counts) if return_counts else means


def mean_codes_path(workdir: str, step: int) -> str:
  return os.path.join(
    os.path.abspath(os.path.expanduser(workdir)), "mean_codes", f"step_{int(step)}.npz"
  )


def _cache_key(trained, attribute_index: int, split: str) -> str:
  """What the mean codes depend on: encoder k's params, the data and its preprocessing."""
  h = hashlib.sha256()
  encoder = trained.params["gen"][f"encoders_{attribute_index}"]
  for path, leaf in sorted(
    jax.tree_util.tree_flatten_with_path(encoder)[0], key=lambda t: jax.tree_util.keystr(t[0])
  ):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  d = trained.config.dataset
  h.update(
    repr(
      (
        d.name,
        d.builder_config,
        split,
        trained.config.image_size,
        tuple(d.attributes),
        trained.config.dtype,
      )
    ).encode()
  )
  return h.hexdigest()


def load_or_compute_mean_codes(
  workdir: str,
  trained,
  builder,
  attribute_index: int,
  split: str = "train",
  batch_size: int = 64,
  compute: Callable[..., Any] | None = None,
) -> np.ndarray:
  """``mean_codes``, cached in ``workdir/mean_codes/step_<N>.npz`` (N = trained.step) under
  the attribute's name (``name@split`` for splits other than train). An entry is reused
  only if the encoder's params, dataset, split and image size it was made from are the
  same (a retrained workdir recomputes it); the file is replaced atomically."""
  compute = compute or mean_codes
  name = trained.config.dataset.attributes[attribute_index]
  entry = name if split == "train" else f"{name}@{split}"
  key = _cache_key(trained, attribute_index, split)
  path = mean_codes_path(workdir, trained.step)
  stored: dict[str, np.ndarray] = {}
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        stored = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
      logging.warning("Ignoring unreadable mean-code cache %s (%s).", path, e)
      stored = {}
    if entry in stored and str(stored.get(f"{entry}.key")) == key:
      logging.info("Mean %s codes from %s.", entry, path)
      return stored[entry]
  means, counts = compute(
    trained, builder, attribute_index, split=split, batch_size=batch_size, return_counts=True
  )
  stored.update(
    {
      entry: np.asarray(means, np.float32),
      f"{entry}.counts": counts,
      f"{entry}.key": np.asarray(key),
    }
  )
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  try:
    with open(tmp, "wb") as f:
      np.savez(f, **stored)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  logging.info("Mean %s codes cached in %s.", entry, path)
  return stored[entry]

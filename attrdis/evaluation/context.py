"""What every metric is a function of: the options, the test split and the trained model.

:class:`Context` holds one trained model, its dataset's test split (read once per process,
:func:`load_split`), the options, and what several metrics share, each made on first use:
the encoded test split (:func:`encode_split`: codes, reconstructions and every classifier
head on every code, one jitted kernel), the evaluation networks
(``attrdis.evaluation.networks``), their reader, and the Inception feature extractor of FID.
Metrics add their notes to ``context.notes`` and the PNGs they write to ``context.images``.

Also the code-level helpers the metrics share: test pairs of different identities
(:func:`choose_pairs`), the attribute sets a transfer takes (:func:`attribute_sets`), code
swaps (:func:`swap_codes`) and batched decoding (:func:`decode_codes`, through
``attrdis.sampling``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from attrdis import checkpoints
from attrdis import errors
from attrdis import input_pipeline
from attrdis import sampling
from attrdis.configuration import ConfigError
from attrdis.evaluation import networks

REST = "rest"
TRANSFER_MODES = ("mean_code", "reference")
SYNTHETIC = "synthetic_faces"


class EvaluationError(errors.UserError, ValueError):
  """A bad request or input; the command ends with it as one ``error:`` line, status 1."""


@dataclasses.dataclass
class Options:
  """The evaluator's settings (the command's flags)."""

  transfer: str = "mean_code"
  fid_weights: str | None = None
  num_pairs: int = 256
  batch_size: int = 64
  hopkins_draws: int = 10
  hopkins_fraction: float = 0.1
  classifier_steps: int = 3000
  classifier_batch_size: int = 32
  classifier_dir: str | None = None  # default: W/eval_classifiers
  seed: int = 0
  write_images: bool = True
  fid_batch_size: int = 50


# ----------------------------------------------------------------------------------------
# The model's dataset (each split read once per process, for the periodic evaluation).

_SPLIT_CACHE: dict[tuple, networks.SplitArrays] = {}


def _dataset_key(config, split: str) -> tuple:
  d = config.dataset
  return (d.name, d.builder_config, d.data_dir, int(config.image_size), split)


def load_split(config, builder, split: str, progress=None) -> networks.SplitArrays:
  """``split`` of the model's (prepared) dataset as arrays at the model's image size."""
  key = _dataset_key(config, split)
  if key not in _SPLIT_CACHE:
    _SPLIT_CACHE[key] = networks.read_split(builder, split, int(config.image_size), progress)
  return _SPLIT_CACHE[key]


def open_dataset(config):
  """(builder, info) of the model's dataset, prepared if needed; EvaluationError if not."""
  try:
    return input_pipeline.load(config)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise EvaluationError(
      f"cannot open dataset {config.dataset.name} (data_dir "
      f"{config.dataset.data_dir or 'default'}): {first}"
    ) from None


# ----------------------------------------------------------------------------------------
# The model on a split: one jitted kernel per batch (the modules are static: equal configs
# share compilations).


@functools.partial(jax.jit, static_argnames=("gen", "cls"))
def _encode_and_read(gen, cls, gen_params, cls_params, x, labels):
  """Codes, reconstructions, and every classifier on every code: per image the entropy
  (n, M, M+1) of C_m(z_k) and whether its argmax is the image's m label."""
  codes = gen.apply({"params": gen_params}, x, method="encode")
  rec = gen.apply({"params": gen_params}, codes, method="decode")
  ent, correct = [], []
  for z in codes:
    logits = cls.apply({"params": cls_params}, z, method="latent")
    e_k, c_k = [], []
    for m, l in enumerate(logits):
      logp = jax.nn.log_softmax(l.astype(jnp.float32), axis=-1)
      e_k.append(-jnp.sum(jnp.exp(logp) * logp, axis=-1))
      c_k.append((jnp.argmax(l, axis=-1) == labels[:, m]).astype(jnp.float32))
    ent.append(jnp.stack(e_k, axis=1))
    correct.append(jnp.stack(c_k, axis=1))
  return codes, rec, jnp.stack(ent, axis=2), jnp.stack(correct, axis=2)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  if len(x) == size:
    return x
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)])


@dataclasses.dataclass
class Encoded:
  """The test split through the model: codes [z_1..z_M, z_0] as numpy (n, h, w, c), the
  reconstructions, and per image the entropy / correctness of C_m on z_k (n, M, M+1)."""

  codes: list[np.ndarray]
  recon: np.ndarray
  entropy: np.ndarray
  correct: np.ndarray


def encode_split(
  models, params, images, labels, batch_size: int, progress: Callable[[str], None] | None = None
) -> Encoded:
  """Runs :func:`_encode_and_read` over ``images`` (float [-1, 1] or uint8) in padded
  batches of ``batch_size``; ``labels`` (n, M) the model's attribute labels."""
  images = np.asarray(images)
  labels = np.asarray(labels, np.int32)
  n = len(images)
  parts: list[Any] = []
  for start in range(0, n, batch_size):
    x = images[start : start + batch_size]
    x = networks.to_float(x) if x.dtype == np.uint8 else np.asarray(x, np.float32)
    y = labels[start : start + batch_size]
    out = _encode_and_read(
      models.gen,
      models.cls,
      params["gen"],
      params["cls"],
      jnp.asarray(_pad(x, batch_size)),
      jnp.asarray(_pad(y, batch_size)),
    )
    k = len(x)
    parts.append(jax.tree.map(lambda a, k=k: np.asarray(a)[:k], out))
    if progress and n > batch_size:
      progress(f"encoded {min(start + batch_size, n)}/{n} test images")
  codes = [np.concatenate([p[0][s] for p in parts]) for s in range(len(parts[0][0]))]
  return Encoded(
    codes=codes,
    recon=np.concatenate([p[1] for p in parts]),
    entropy=np.concatenate([p[2] for p in parts]),
    correct=np.concatenate([p[3] for p in parts]),
  )


def decode_codes(models, gen_params, codes: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
  """Images (n, S, S, 3) in [-1, 1] of codes given per slot as (n, h, w, c)."""
  return sampling.decode_batched(models, gen_params, codes, batch_size)


def swap_codes(
  codes: Sequence[np.ndarray], source_idx, target_idx, take: Sequence[int]
) -> list[np.ndarray]:
  """Codes of each source with the slots in ``take`` from its target (index arrays)."""
  return [c[target_idx] if k in take else c[source_idx] for k, c in enumerate(codes)]


def choose_pairs(identity, num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``num`` random (source, target) index pairs with different identities (seeded)."""
  identity = np.asarray(identity)
  if len(np.unique(identity)) < 2:
    raise EvaluationError("pairs of different identities need at least two test identities")
  rng = np.random.default_rng(seed)
  src, tgt = [], []
  while len(src) < num:
    i, j = rng.integers(0, len(identity), size=2)
    if identity[i] != identity[j]:
      src.append(i)
      tgt.append(j)
  return np.asarray(src, np.int64), np.asarray(tgt, np.int64)


def attribute_sets(attributes: Sequence[str]) -> list[tuple[str, ...]]:
  """Each attribute alone, then each pair of attributes."""
  return [(a,) for a in attributes] + list(itertools.combinations(attributes, 2))


def set_name(names: Sequence[str]) -> str:
  return "+".join(names)


# ----------------------------------------------------------------------------------------
# The context.


class Context:
  """One trained model, its test split and the options; shared work made on first use.

  ``builder`` (and ``info``) default to the model's dataset, prepared if needed
  (:func:`open_dataset`); ``inception`` to the feature extractor of ``options.fid_weights``
  (any ``f(images, value_range) -> features`` will do)."""

  def __init__(
    self,
    trained: checkpoints.Trained,
    workdir: str,
    options: Options | None = None,
    progress: Callable[[str], None] | None = None,
    builder=None,
    info=None,
    inception: Callable[..., np.ndarray] | None = None,
  ):
    self.trained = trained
    self.config = trained.config
    self.models = trained.models
    self.params = trained.params
    self.workdir = workdir
    self.options = options or Options()
    self.progress = progress or (lambda s: logging.info("%s", s))
    self.attributes = tuple(self.config.dataset.attributes)
    self.code_names = self.attributes + (REST,)
    if builder is None:
      builder, info = open_dataset(self.config)
    self.builder, self.info = builder, info
    self.dataset = self.config.dataset.name
    self.test = load_split(self.config, builder, "test", self.progress)
    missing = [a for a in self.attributes if a not in self.test.labels]
    if missing:
      raise EvaluationError(f"the test split does not label {', '.join(missing)}")
    self.labels = np.stack([self.test.labels[a] for a in self.attributes], axis=1)
    self.notes: list[str] = []
    self.images: dict[str, str] = {}  # PNG kind → path, of the files written
    self._encoded: Encoded | None = None
    self._eval_model: networks.EvalModel | None = None
    self._reader = None
    self._inception = inception

  @property
  def step(self) -> int:
    return int(self.trained.step)

  @property
  def num_classes(self) -> tuple[int, ...]:
    return tuple(self.models.num_classes)

  @property
  def stored_image_size(self) -> int:
    """The side of the images as the dataset stores them (before the model's resize)."""
    return int(self.builder.info.features["image"].shape[0])

  def class_names(self, attribute: str) -> tuple[str, ...]:
    return self.test.class_names[attribute]

  def eval_dir(self) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(self.workdir)), "eval")

  def image_path(self, kind: str) -> str:
    """``W/eval/<kind>_<step>.png``."""
    return os.path.join(self.eval_dir(), f"{kind}_{self.step}.png")

  def train_split(self) -> networks.SplitArrays:
    return load_split(self.config, self.builder, "train", self.progress)

  def encode(self) -> Encoded:
    """The test split through the model (:func:`encode_split`)."""
    if self._encoded is None:
      self.progress(f"encoding {len(self.test)} test images")
      self._encoded = encode_split(
        self.models,
        self.params,
        self.test.images,
        self.labels,
        self.options.batch_size,
        self.progress,
      )
    return self._encoded

  def decode(self, codes: Sequence[np.ndarray]) -> np.ndarray:
    """Images of codes given per slot (:func:`decode_codes`)."""
    return decode_codes(self.models, self.params["gen"], codes, self.options.batch_size)

  def eval_model(self) -> networks.EvalModel:
    """The evaluation networks (trained on first use and saved in the workdir, or in
    ``options.classifier_dir``; then read from there)."""
    if self._eval_model is None:
      tasks = networks.default_tasks(self.dataset, self.test, self.attributes)
      o = self.options
      self._eval_model = networks.load_or_train(
        o.classifier_dir or networks.directory(self.workdir),
        self.dataset,
        self.config.dataset.builder_config,
        int(self.config.image_size),
        tasks,
        self.train_split,
        self.test,
        steps=o.classifier_steps,
        batch_size=o.classifier_batch_size,
        seed=o.seed,
        progress=self.progress,
      )
    return self._eval_model

  def reader(self) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The evaluation networks' ``read(images)`` (``networks.reader`` on the test split)."""
    if self._reader is None:
      self._reader = networks.reader(self.eval_model(), self.test)
    return self._reader

  def inception(self):
    """The FID feature extractor, or None without ``options.fid_weights``."""
    if self._inception is None and self.options.fid_weights:
      from attrdis import fid  # pylint: disable=g-import-not-at-top

      self._inception = fid.InceptionFeatureExtractor.from_weights(
        self.options.fid_weights, batch_size=self.options.fid_batch_size
      )
    return self._inception

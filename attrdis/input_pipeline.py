"""Input pipeline: TFDS ``array_record`` data sources read with grain.

Batches are dicts of numpy arrays: ``image`` (b, S, S, 3) and ``label`` int32 (b, M), one
column per ``config.dataset.attributes`` in that order. Training batches keep the stored uint8
pixels (resized to S if stored larger): the train step scales them to [-1, 1] on the device
(``train_step.model_images``), so the host does no float work and moves a quarter of the
bytes. Evaluation batches are float32 in [-1, 1] (the same numbers). Each process reads its
own shard; the batch a process yields is its share of the global batch.

Training order (the invariant multi-process training relies on): global batch k is the
records ``perm_e[p*B:(p+1)*B]`` in that order, where B = config.batch_size, n the number of
training records, e = k // (n // B) the epoch, p = k % (n // B), and perm_e the permutation
of range(n) drawn by ``np.random.default_rng([seed, e])`` (the last n % B records of each
permutation are dropped). A process reads only its rows [start, stop) of each global batch:
the rows its devices hold. The global batches are therefore the same examples in the same
order whatever the number of processes and of grain workers.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
from typing import Any

from absl import logging
import grain.python as grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from attrdis.configuration import ConfigError

KNOWN_DATASETS = ("synthetic_faces", "multipie", "bu3dfe", "rafd", "labelled_images")
# Your own images: the builder's options come from config.dataset.folder, its attributes are
# the folder's columns (known once it is read).
LABELLED_IMAGES = "labelled_images"
# How far a training reader reads ahead (in each grain worker process, or in the trainer when
# there is none): one thread, two batches. Each element of the training source is a whole batch,
# so grain's default (16 threads, 500 elements) read 500 batches ahead of the step: 390 MB per
# reader at 128 px, and at the start of a run (or of a short test run) thousands of records read
# that no step used. On the 2-core CPU the small read-ahead also delivers about twice the
# images/s (threads of one process share its interpreter lock); docs/performance.md.
TRAIN_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)


def builder_module(name: str):
  """The module ``attrdis_datasets.<name>.<name>_dataset_builder``."""
  if name not in KNOWN_DATASETS:
    raise ConfigError(
      f"config.dataset.name={name!r}: unknown dataset; choose one of {', '.join(KNOWN_DATASETS)}."
    )
  return importlib.import_module(f"attrdis_datasets.{name}.{name}_dataset_builder")


def get_builder(dataset_config: ml_collections.ConfigDict):
  """The TFDS builder that ``config.dataset`` names (not prepared)."""
  module = builder_module(dataset_config.name)
  kwargs: dict[str, Any] = {"file_format": "array_record"}
  if dataset_config.name == LABELLED_IMAGES:
    kwargs.update(module.builder_kwargs(dataset_config))
  elif dataset_config.builder_config:
    names = [c.name for c in module.Builder.BUILDER_CONFIGS]
    if dataset_config.builder_config not in names:
      raise ConfigError(
        f"config.dataset.builder_config={dataset_config.builder_config!r}: dataset "
        f"{dataset_config.name!r} has the configs {', '.join(names)}."
      )
    kwargs["config"] = dataset_config.builder_config
  if dataset_config.data_dir:
    kwargs["data_dir"] = os.path.expanduser(dataset_config.data_dir)
  return module.Builder(**kwargs)


def check_attributes(builder, attributes, manual_dir: str = "") -> None:
  """Checks that the dataset labels every attribute (a ClassLabel feature of that name).

  A labelled folder not prepared yet has no features: its attributes are read from the folder
  (the header of its labels file, or its class folders).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = builder.info.features
  if features is None and builder.name == LABELLED_IMAGES:
    source, columns = builder_module(LABELLED_IMAGES).label_columns(
      manual_dir, builder.builder_config
    )
    for a in attributes:
      if a not in columns:
        raise ConfigError(
          f"config.dataset.attributes: {a!r} is not a column of {source} (its "
          f"attributes: {', '.join(columns)})."
        )
    return
  labels = [k for k, v in features.items() if isinstance(v, tfds.features.ClassLabel)]
  for a in attributes:
    if a not in labels:
      raise ConfigError(
        f"config.dataset.attributes: {a!r} is not labelled by dataset "
        f"{builder.name!r} (config {builder.builder_config.name!r}); it labels "
        f"{', '.join(labels)}."
      )


def prepare(builder, dataset_config: ml_collections.ConfigDict) -> None:
  """Builds the dataset on first use (the licensed ones from ``config.dataset.manual_dir``)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  download_config = None
  if dataset_config.manual_dir:
    download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(dataset_config.manual_dir)
    )
  logging.info(
    "Dataset %s/%s in %s (prepared on first use).",
    builder.name,
    builder.builder_config.name,
    builder.data_dir,
  )
  if builder.name == LABELLED_IMAGES and builder.is_prepared():
    builder_module(LABELLED_IMAGES).check_prepared(builder, dataset_config.manual_dir)
  builder.download_and_prepare(download_config=download_config)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the rest of the system needs to know about the data."""

  name: str
  attributes: tuple[str, ...]
  num_classes: tuple[int, ...]
  class_names: tuple[tuple[str, ...], ...]
  num_train: int
  num_test: int
  stored_image_size: int


def load(config: ml_collections.ConfigDict):
  """Returns (builder, DatasetInfo), preparing the dataset if needed."""
  builder = get_builder(config.dataset)
  attributes = tuple(config.dataset.attributes)
  check_attributes(builder, attributes, config.dataset.manual_dir)
  if jax.process_index() == 0:
    prepare(builder, config.dataset)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices("dataset_prepared")
  # A fresh builder reads the prepared dataset's info (class lists found while building).
  builder = get_builder(config.dataset)
  check_attributes(builder, attributes)
  features = builder.info.features
  splits = builder.info.splits
  info = DatasetInfo(
    name=builder.name,
    attributes=attributes,
    num_classes=tuple(features[a].num_classes for a in attributes),
    class_names=tuple(tuple(features[a].names) for a in attributes),
    num_train=splits["train"].num_examples,
    num_test=splits["test"].num_examples if "test" in splits else 0,
    stored_image_size=int(features["image"].shape[0]),
  )
  return builder, info


def resize_image(image: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 (H, W, 3) → uint8 (S, S, 3), resized with antialiasing (Lanczos) if needed."""
  if image.shape[0] != image_size or image.shape[1] != image_size:
    image = np.asarray(
      Image.fromarray(image).resize((image_size, image_size), Image.Resampling.LANCZOS)
    )
  return image


def to_model_image(image: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 (H, W, 3) → float32 (S, S, 3) in [-1, 1], resized with antialiasing if needed."""
  return resize_image(image, image_size).astype(np.float32) / 127.5 - 1.0


def decode_image(value) -> np.ndarray:
  """A record's image as uint8 (H, W, 3): data sources give arrays; raw bytes are decoded."""
  if isinstance(value, (bytes, bytearray)):
    value = np.asarray(Image.open(io.BytesIO(value)).convert("RGB"))
  return np.asarray(value, dtype=np.uint8)


class ToModelInputs(grain.MapTransform):
  """A TFDS record → {'image': float32 in [-1, 1] (``uint8``: the pixels), 'label': int32 (M,)}."""

  def __init__(self, attributes, image_size, uint8: bool = False):
    self.attributes = tuple(attributes)
    self.image_size = image_size
    self.convert = resize_image if uint8 else to_model_image

  def map(self, record):
    return {
      "image": self.convert(decode_image(record["image"]), self.image_size),
      "label": np.asarray([record[a] for a in self.attributes], dtype=np.int32),
    }


class GlobalBatchRows:
  """A random-access source whose element k is this process' rows of global batch k (a list
  of records in row order); see the module docstring for the order. Grain's workers each
  read whole elements, so the worker count does not change what a batch holds."""

  def __init__(
    self, source, batch_size: int, rows: tuple[int, int], seed: int, num_epochs: int | None = None
  ):
    self.source = source
    self.num_records = len(source)
    self.batch_size = batch_size
    self.rows = (int(rows[0]), int(rows[1]))
    self.seed = seed
    self.batches_per_epoch = self.num_records // batch_size
    if self.batches_per_epoch < 1:
      raise ConfigError(
        f"config.batch_size={batch_size} is larger than the {self.num_records} training records."
      )
    # "Forever" is long enough for any run (and stays a lazy range in grain's sampler).
    self.num_epochs = num_epochs if num_epochs is not None else 2**40 // self.batches_per_epoch
    self._perm_epoch, self._perm = None, None

  def __len__(self) -> int:
    return self.batches_per_epoch * self.num_epochs

  def __repr__(self) -> str:
    return (
      f"GlobalBatchRows({self.source!r}, batch_size={self.batch_size}, "
      f"rows={self.rows}, seed={self.seed})"
    )

  def permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_records)
      self._perm_epoch = epoch
    return self._perm

  def record_keys(self, k: int) -> np.ndarray:
    """The record keys of this process' rows of global batch k."""
    epoch, position = divmod(int(k), self.batches_per_epoch)
    start = position * self.batch_size
    return self.permutation(epoch)[start + self.rows[0] : start + self.rows[1]]

  def __getitem__(self, k: int):
    return [self.source[int(i)] for i in self.record_keys(k)]


class ToModelBatch(grain.MapTransform):
  """A list of TFDS records → a batch {'image': (b,S,S,3) uint8 (or float32 in [-1, 1]),
  'label': (b,M) int32}."""

  def __init__(self, attributes, image_size, uint8: bool = True):
    self.one = ToModelInputs(attributes, image_size, uint8)

  def map(self, records):
    examples = [self.one.map(r) for r in records]
    return {k: np.stack([e[k] for e in examples]) for k in ("image", "label")}


def train_image_dtype(config: ml_collections.ConfigDict):
  """The dtype of the training batches' images: uint8, scaled on the device by the step."""
  return np.float32 if config.get("debug_nan_at_step", 0) else np.uint8


def process_rows(batch_size: int) -> tuple[int, int]:
  """This process' contiguous share of the global batch when devices are grouped by process
  (the training loop passes the rows its data sharding gives instead)."""
  per_process = batch_size // jax.process_count()
  return jax.process_index() * per_process, (jax.process_index() + 1) * per_process


def default_num_workers(requested: int) -> int:
  if requested >= 0:
    return requested
  return max(0, min(8, (os.cpu_count() or 1) // 2))


def create_loader(
  config: ml_collections.ConfigDict,
  builder,
  split: str,
  *,
  train: bool,
  num_epochs: int | None = None,
  worker_count: int | None = None,
  seed: int | None = None,
  rows: tuple[int, int] | None = None,
) -> grain.DataLoader:
  """A grain DataLoader over one split, sharded by process, batched to this process' share.

  With ``train`` the records are shuffled anew each epoch (the seed and the epoch decide
  the order; see the module docstring) and epochs repeat forever unless ``num_epochs`` is
  given; the last incomplete batch is dropped; ``rows`` = (start, stop) are the rows of
  each global batch this process reads (default: its share by process index). Without
  ``train`` the order is fixed, the last batch is kept, and processes read contiguous
  shards of the split.
  """
  source = builder.as_data_source(split)
  if config.batch_size % jax.process_count():
    raise ConfigError(
      f"config.batch_size={config.batch_size} does not divide over {jax.process_count()} processes."
    )
  workers = (
    default_num_workers(config.dataset.num_workers) if worker_count is None else worker_count
  )
  if train:
    batches = GlobalBatchRows(
      source,
      config.batch_size,
      rows if rows is not None else process_rows(config.batch_size),
      config.seed if seed is None else seed,
      num_epochs,
    )
    return grain.DataLoader(
      data_source=batches,
      sampler=grain.IndexSampler(
        num_records=len(batches), num_epochs=1, shuffle=False, shard_options=grain.NoSharding()
      ),
      operations=[
        ToModelBatch(
          config.dataset.attributes, config.image_size, uint8=train_image_dtype(config) == np.uint8
        )
      ],
      worker_count=workers,
      read_options=TRAIN_READ_OPTIONS,
    )
  sampler = grain.IndexSampler(
    num_records=len(source),
    shard_options=grain.ShardByJaxProcess(drop_remainder=False),
    shuffle=False,
    num_epochs=1,
  )
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=[
      ToModelInputs(config.dataset.attributes, config.image_size),
      grain.Batch(config.batch_size // jax.process_count(), drop_remainder=False),
    ],
    worker_count=workers,
  )

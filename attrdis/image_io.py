"""The user's images, folders of images and dataset splits, as model inputs.

A source is a list of items, each an image file, a folder (its images, sorted by name, not
recursive) or a dataset split ``split:NAME`` / ``split:NAME[a:b]`` (Python slice bounds;
``split:test[:8]`` is the first 8 test images, ``split:test[5]`` the sixth).

User images go through the crop and resize of the dataset the model was trained on (each
builder module's ``preprocess_image``, to the size the dataset stores), then the training
pipeline's resize to ``config.image_size`` and scaling to [-1, 1]
(``input_pipeline.to_model_image``); split images go through the training pipeline alone,
exactly as in training.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Sequence

import ml_collections
import numpy as np
from PIL import Image

from attrdis import errors
from attrdis.images import IMAGE_EXTENSIONS
from attrdis import input_pipeline

SPLIT_PREFIX = "split:"
_SPLIT_RE = re.compile(
  r"(?P<name>[A-Za-z0-9_\-]+)"
  r"(?:\[(?:(?P<index>-?\d+)|(?P<start>-?\d*):(?P<stop>-?\d*))\])?"
)


# Modes that convert to RGB faithfully; 16-bit and float images would be clipped silently.
CONVERTIBLE_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr")


class SourceError(errors.InputError):
  """An image, folder or split given to sample from that cannot be used; the message is one
  line and names it."""


@dataclasses.dataclass(frozen=True)
class Inputs:
  """Model inputs: ``images`` float32 (n, S, S, 3) in [-1, 1]; ``names`` (file path or
  ``split[i]``); ``labels`` int32 (n, M), -1 where not known (user images)."""

  images: np.ndarray
  names: tuple[str, ...]
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.names)

  def take(self, indices: Sequence[int]) -> "Inputs":
    idx = np.asarray(indices, np.int64)
    return Inputs(self.images[idx], tuple(self.names[i] for i in idx), self.labels[idx])


def preprocess_fn(config: ml_collections.ConfigDict) -> Callable[[Image.Image, int], np.ndarray]:
  """The crop/resize that made the model's dataset: ``preprocess_image(pil, size) -> uint8``
  (a builder whose crop is an option, like ``labelled_images``, gives it for the config's
  options through ``preprocess_for(config.dataset)``)."""
  module = input_pipeline.builder_module(config.dataset.name)
  if hasattr(module, "preprocess_for"):
    return module.preprocess_for(config.dataset)
  return module.preprocess_image


def stored_image_size(config: ml_collections.ConfigDict, builder=None) -> int:
  """The size of the dataset's stored images (what ``preprocess_image`` made them), else
  ``config.image_size``."""
  try:
    builder = builder or input_pipeline.get_builder(config.dataset)
    return int(builder.info.features["image"].shape[0])
  except Exception:  # pylint: disable=broad-except
    return int(config.image_size)


def load_image(
  path: str, config: ml_collections.ConfigDict, stored_size: int | None = None
) -> np.ndarray:
  """One image file as a model input, float32 (S, S, 3) in [-1, 1]."""
  size = stored_size or int(config.image_size)
  try:
    with Image.open(path) as img:
      img.load()
      if img.mode not in CONVERTIBLE_MODES:
        why = errors.unsupported_image_mode(path, img, ("RGB", "RGBA", "L", "P"))
        raise SourceError(f"cannot read image {why}")
      pixels = preprocess_fn(config)(img, size)
  except SourceError:
    raise
  except Exception as e:  # PIL raises many kinds for broken files  pylint: disable=broad-except
    raise SourceError(f"cannot read image {errors.image_error(path, e)}") from None
  return input_pipeline.to_model_image(np.asarray(pixels, np.uint8), int(config.image_size))


def list_images(folder: str) -> list[str]:
  """The image files of a folder (by extension), sorted by name; not recursive."""
  try:
    names = sorted(os.listdir(folder))
  except OSError as e:
    raise SourceError(f"cannot read folder {folder}: {e.strerror}") from None
  files = [
    os.path.join(folder, n)
    for n in names
    if n.lower().endswith(IMAGE_EXTENSIONS)
    and not n.startswith(".")
    and os.path.isfile(os.path.join(folder, n))
  ]
  if not files:
    raise SourceError(f"folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
  return files


def split_items(values: Sequence[str] | str | None) -> list[str]:
  """Flag values → items: each value is split on commas, unless it is an existing path."""
  if values is None:
    return []
  if isinstance(values, str):
    values = [values]
  items = []
  for v in values:
    if os.path.exists(v):
      items.append(v)
    else:
      items.extend(s.strip() for s in v.split(",") if s.strip())
  return items


def parse_split(spec: str) -> tuple[str, slice]:
  """``NAME``, ``NAME[a:b]`` or ``NAME[i]`` (after ``split:``) → (NAME, slice)."""
  m = _SPLIT_RE.fullmatch(spec.strip())
  if not m:
    raise SourceError(
      f"cannot parse split {spec!r}: write split:NAME, split:NAME[a:b] or "
      "split:NAME[i], e.g. split:test[:8]"
    )
  if m["index"] is not None:
    i = int(m["index"])
    return m["name"], slice(i, i + 1 if i != -1 else None)
  start = int(m["start"]) if m["start"] else None
  stop = int(m["stop"]) if m["stop"] else None
  return m["name"], slice(start, stop)


def split_source(builder, split: str):
  """(data source, record indices) of a split spec (``test``, ``test[:8]``) of a prepared
  builder. Raises SourceError for a split the dataset does not have."""
  name, sl = parse_split(split)
  splits = builder.info.splits
  if not splits:
    raise SourceError(
      f"dataset {builder.name} is not prepared in {builder.data_dir}; train "
      "on it first, or give --data_dir"
    )
  if name not in splits:
    raise SourceError(
      f"dataset {builder.name}/{builder.builder_config.name} has no split "
      f"{name!r}; it has {', '.join(sorted(splits))}"
    )
  n = splits[name].num_examples
  indices = list(range(n))[sl]
  if not indices:
    raise SourceError(f"split:{split} selects no images (split {name!r} has {n})")
  return builder.as_data_source(name), indices


def load_split(
  builder, split: str, config: ml_collections.ConfigDict, indices: Sequence[int] | None = None
) -> Inputs:
  """The images of a split spec through the training pipeline; ``indices`` picks some of
  them (positions within the spec's selection)."""
  source, records = split_source(builder, split)
  if indices is not None:
    records = [records[i] for i in indices]
  name = parse_split(split)[0]
  to_inputs = input_pipeline.ToModelInputs(config.dataset.attributes, config.image_size)
  out = [to_inputs.map(source[i]) for i in records]
  return Inputs(
    images=np.stack([o["image"] for o in out]).astype(np.float32),
    names=tuple(f"{name}[{i}]" for i in records),
    labels=np.stack([o["label"] for o in out]).astype(np.int32),
  )


def split_size(builder, split: str) -> int:
  return len(split_source(builder, split)[1])


def load_source(
  values: Sequence[str] | str,
  config: ml_collections.ConfigDict,
  get_builder: Callable[[], object] | None = None,
  what: str = "--source",
) -> Inputs:
  """All the images of a source (files, folders and ``split:`` items, in order).

  ``get_builder`` returns the prepared dataset builder (called only for ``split:`` items;
  by default ``input_pipeline.get_builder``, which does not prepare it).
  """
  items = split_items(values)
  if not items:
    raise SourceError(f"{what} names no images")
  get_builder = get_builder or (lambda: input_pipeline.get_builder(config.dataset))
  m = len(config.dataset.attributes)
  images, names, labels = [], [], []
  stored = None
  for item in items:
    if item.startswith(SPLIT_PREFIX):
      part = load_split(get_builder(), item[len(SPLIT_PREFIX) :], config)
      images.extend(part.images)
      names.extend(part.names)
      labels.extend(part.labels)
      continue
    paths = list_images(item) if os.path.isdir(item) else [item]
    if stored is None:
      stored = stored_image_size(config)
    for p in paths:
      images.append(load_image(p, config, stored))
      names.append(p)
      labels.append(np.full((m,), -1, np.int32))
  return Inputs(
    images=np.stack(images).astype(np.float32),
    names=tuple(names),
    labels=np.stack(labels).astype(np.int32),
  )

"""Features shared by the builders."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

# The release note of the builder version that moved from PNG to raw pixels.
RAW_PIXELS_NOTE = (
  "The same pixels, stored raw (a uint8 tensor) instead of as PNG: reading an image is a copy, "
  "several times faster than decoding a PNG."
)


def image(size: int) -> tfds.features.Tensor:
  """The ``image`` feature of every builder: (size, size, 3) uint8 RGB pixels stored raw
  (no PNG), so that reading an image is a copy: several times the images/s of decoding PNGs
  per input worker (``benchmarks/input_storage.py`` measures it). On disk it takes at most
  size² × 3 bytes per image (48 KiB at 128 px), more than a PNG of a photograph."""
  return tfds.features.Tensor(
    shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
  )


def pixels(image: np.ndarray) -> np.ndarray:
  """An (H, W, 3) image as the ``image`` feature takes it: C-contiguous uint8."""
  array = np.ascontiguousarray(image, dtype=np.uint8)
  if array.ndim != 3 or array.shape[2] != 3:
    raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
  return array

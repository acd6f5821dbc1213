"""Image grids: numpy in [-1, 1] → uint8 tiles → PNG."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# The file names read as images where a folder of pictures is given (the sampler's sources,
# labelled folders).
IMAGE_EXTENSIONS = (
  ".png",
  ".jpg",
  ".jpeg",
  ".bmp",
  ".gif",
  ".tif",
  ".tiff",
  ".webp",
  ".ppm",
  ".pgm",
)


def to_uint8(images) -> np.ndarray:
  """float images in [-1, 1] → uint8 [0, 255] (clipped)."""
  images = np.asarray(images, dtype=np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(rows, pad: int = 2, pad_value: int = 255) -> np.ndarray:
  """rows: array (R, C, H, W, 3) in [-1, 1] (or a list of R equal-length lists of images).

  Returns one uint8 image with R rows and C columns of tiles separated by ``pad`` pixels.
  """
  tiles = to_uint8(np.asarray(rows, dtype=np.float32))
  r, c, h, w, ch = tiles.shape
  grid = np.full((r * h + (r + 1) * pad, c * w + (c + 1) * pad, ch), pad_value, np.uint8)
  for i in range(r):
    for j in range(c):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y : y + h, x : x + w] = tiles[i, j]
  return grid


def save_png(image: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return path

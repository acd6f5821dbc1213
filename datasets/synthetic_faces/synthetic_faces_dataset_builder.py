"""synthetic_faces: procedurally rendered frontal cartoon faces with known factors.

Every example can be re-rendered from its stored features
(``attrdis.synthetic.factors_from_record`` + ``attrdis.synthetic.render``), so transfers
between examples have a true answer (``attrdis.synthetic.transfer_ground_truth``).

Nothing is downloaded; build with
``Builder(config=..., data_dir=..., file_format="array_record").download_and_prepare()``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from attrdis.synthetic import design as design_lib
from attrdis.synthetic import factors as factors_lib
from attrdis.synthetic import render as render_lib
from attrdis_datasets import features as features_lib

_RENDER_BATCH = 64


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """Image size and scale of a build."""

  image_size: int = 64
  num_train_identities: int = 100
  num_test_identities: int = 20
  intensity_levels: int = 4  # intensities 1/L, 2/L, ..., 1 for each non-neutral expression
  repeats: int = 2  # images per (identity, expression, intensity)
  seed: int = 0

  @property
  def design(self) -> design_lib.Design:
    return design_lib.Design(
      self.num_train_identities,
      self.num_test_identities,
      self.intensity_levels,
      self.repeats,
      self.seed,
    )


def _make_config(name: str) -> SyntheticFacesConfig:
  size, d = design_lib.CONFIGS[name]
  n_train, n_test = d.num_images("train"), d.num_images("test")
  return SyntheticFacesConfig(
    name=name,
    description=(
      f"{size}x{size} px; {d.num_train_identities} train / "
      f"{d.num_test_identities} test identities, {d.images_per_identity} "
      f"images each ({n_train} train, {n_test} test images)."
    ),
    image_size=size,
    num_train_identities=d.num_train_identities,
    num_test_identities=d.num_test_identities,
    intensity_levels=d.intensity_levels,
    repeats=d.repeats,
    seed=d.seed,
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic cartoon faces: identity, expression (+ intensity), illumination, gaze, colour."""

  name = "synthetic_faces"
  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "2.0.0": (
      "Expressions that show at 32 px: the face fills more of the frame (half "
      "height 0.78-0.86 of half the image, was 0.58-0.66), larger mouths, eyes and "
      "thicker brows, and deformations about twice as strong (at intensity 1 each "
      "expression moves 5-7 % of the pixels by more than 0.1 at 32 px, was 1-2.5 %)."
    ),
    "2.1.0": features_lib.RAW_PIXELS_NOTE,
  }
  BUILDER_CONFIGS = [_make_config(n) for n in design_lib.CONFIGS]  # 64px first: the default
  DEFAULT_CONFIG_NAME = design_lib.DEFAULT_CONFIG

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    size = cfg.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": features_lib.image(size),
          "identity": tfds.features.ClassLabel(names=cfg.design.identity_names()),
          "expression": tfds.features.ClassLabel(names=factors_lib.EXPRESSIONS),
          "illumination": tfds.features.ClassLabel(names=factors_lib.ILLUMINATIONS),
          "gaze": tfds.features.ClassLabel(names=factors_lib.GAZES),
          "color": tfds.features.ClassLabel(names=factors_lib.COLORS),
          "intensity": tfds.features.Scalar(dtype=np.float32),
          "identity_params": tfds.features.Tensor(
            shape=(factors_lib.NUM_IDENTITY_PARAMS,), dtype=np.float32
          ),
        }
      ),
      supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in ("train", "test")}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    items = list(cfg.design.examples(split))
    for start in range(0, len(items), _RENDER_BATCH):
      chunk = items[start : start + _RENDER_BATCH]
      images = render_lib.render_batch([f for _, _, f in chunk], cfg.image_size)
      for (key, identity, f), image in zip(chunk, images):
        yield (
          key,
          {
            "image": features_lib.pixels(image),
            "identity": identity,
            "expression": f.expression,
            "illumination": f.illumination,
            "gaze": f.gaze,
            "color": f.color,
            "intensity": np.float32(f.intensity),
            "identity_params": f.identity,
          },
        )


def preprocess_image(img: Image.Image, image_size: int) -> np.ndarray:
  """A user's image as the model's input: RGB, centre-cropped to a square and resized
  (with antialiasing) to ``image_size``; uint8 (image_size, image_size, 3)."""
  img = img.convert("RGB")
  w, h = img.size
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  img = img.crop((left, top, left + side, top + side))
  if side != image_size:
    img = img.resize((image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=None)
  return np.asarray(img, dtype=np.uint8).copy()

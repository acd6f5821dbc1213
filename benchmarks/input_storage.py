"""Per-worker cost of reading training images: PNG + float32 on the host against raw uint8.

Renders N synthetic faces at --size px, writes them twice as TFDS ``array_record`` datasets
(the image as a PNG ``tfds.features.Image``, as synthetic faces 2.0.0 and the vendor builders
store it; and as a raw uint8 ``tfds.features.Tensor``, as synthetic faces 2.1.0 stores it),
then times what one grain worker does per training batch with each:

* ``png_float32``: decode the PNG, convert to float32 in [-1, 1] on the host (the pipeline
  before the step took uint8);
* ``png_uint8``: decode the PNG, keep uint8 (the vendor builders' data now);
* ``raw_uint8``: copy the stored pixels, keep uint8 (synthetic faces now).

The three are timed in turn, --rounds times, so that a busy machine slows all of them alike;
the JSON gives the median images/s of each and the ratios to ``png_float32``. Usage:

    python benchmarks/input_storage.py [--size=128] [--num=512] [--rounds=5] [--out=FILE.json]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from attrdis import benchmark
from attrdis import cli
from attrdis import input_pipeline
from attrdis.synthetic import design as design_lib
from attrdis.synthetic import render as render_lib

BATCH = 16

FLAGS = flags.FlagValues()
flags.DEFINE_integer(
  "size", 128, "Image side in px.", lower_bound=16, upper_bound=256, flag_values=FLAGS
)
flags.DEFINE_integer(
  "num", 512, "Images written (and read per round).", lower_bound=BATCH, flag_values=FLAGS
)
flags.DEFINE_integer(
  "rounds", 5, "Rounds of the three ways, in turn.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_string("out", "", "Also write the JSON to this file.", flag_values=FLAGS)


def make_builder(storage: str, size: int, images: np.ndarray):
  """A TFDS builder class writing ``images`` with the image feature of ``storage``."""

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = f"input_storage_{storage}"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      image = (
        tfds.features.Image(shape=(size, size, 3), encoding_format="png")
        if storage == "png"
        else tfds.features.Tensor(
          shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
        )
      )
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {"image": image, "expression": tfds.features.ClassLabel(num_classes=5)}
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, image in enumerate(images):
        yield i, {"image": image, "expression": i % 5}

  return Builder


def time_pipeline(source, uint8: bool, num_batches: int) -> float:
  """Images/s of one worker: records of each batch read and turned into a model batch."""
  rows = input_pipeline.GlobalBatchRows(source, BATCH, (0, BATCH), seed=0)
  to_batch = input_pipeline.ToModelBatch(
    ("expression",), source.dataset_info.features["image"].shape[0], uint8=uint8
  )
  t = time.perf_counter()
  for k in range(num_batches):
    batch = to_batch.map(rows[k])
  assert batch["image"].dtype == (np.uint8 if uint8 else np.float32)
  return num_batches * BATCH / (time.perf_counter() - t)


def main(argv):
  del argv  # no positional arguments
  args = FLAGS
  design = design_lib.CONFIGS["tiny"][1]
  factors = [f for _, _, f in design.examples("train")]
  factors = (factors * (args.num // len(factors) + 1))[: args.num]
  images = np.asarray(render_lib.render_batch(factors, args.size), np.uint8)
  with tempfile.TemporaryDirectory() as data_dir:
    sources = {}
    for storage in ("png", "raw"):
      builder = make_builder(storage, args.size, images)(
        data_dir=data_dir, file_format="array_record"
      )
      builder.download_and_prepare()
      sources[storage] = builder.as_data_source("train")
      sizes = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, fs in os.walk(os.path.join(data_dir, builder.name))
        for f in fs
        if "array_record" in f
      )
      print(f"{storage}: {sizes / args.num / 1024:.1f} KiB per image on disk", flush=True)
    ways = {"png_float32": ("png", False), "png_uint8": ("png", True), "raw_uint8": ("raw", True)}
    rates: dict[str, list[float]] = {k: [] for k in ways}
    num_batches = args.num // BATCH
    for r in range(args.rounds):
      for name, (storage, uint8) in ways.items():
        rates[name].append(time_pipeline(sources[storage], uint8, num_batches))
      print(
        f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True
      )
  median = {k: statistics.median(v) for k, v in rates.items()}
  result = {
    "image_size": args.size,
    "images": args.num,
    "rounds": args.rounds,
    "batch": BATCH,
    "images_per_s_one_worker": median,
    "ratio_to_png_float32": {k: v / median["png_float32"] for k, v in median.items()},
    "all_rounds": rates,
  }
  benchmark.emit(result, args.out)


if __name__ == "__main__":
  cli.run(main, FLAGS)

"""Writes a small labelled folder to try the ``labelled_images`` dataset on (the worked example
of docs/folder_dataset.md):

    python -m attrdis_datasets.labelled_images.example /tmp/faces [--identities=8] [--size=64]

``/tmp/faces/labels.csv`` (columns ``file,identity,expression,gaze``) and
``/tmp/faces/photos/<identity>_<expression>_<gaze>.png``: every identity with every expression
(neutral, smile, surprise, anger, sadness) and gaze (left, centre, right), drawn by the
synthetic-faces renderer. Each picture is a portrait frame, ``size`` wide and 4/3 as tall, with
the face in its centred square (what ``crop=center`` keeps). ``--help`` lists the flags; an error
is one ``error: ...`` line (status 1; 2 for a bad command line).
"""

from __future__ import annotations

import csv
import pathlib
from typing import Sequence

from absl import flags
import numpy as np
from PIL import Image

from attrdis import cli
from attrdis import errors
from attrdis.synthetic import factors as factors_lib
from attrdis.synthetic import render

EXPRESSIONS = factors_lib.EXPRESSIONS
GAZES = factors_lib.GAZES
COLUMNS = ("file", "identity", "expression", "gaze")

FLAGS = flags.FlagValues()
flags.DEFINE_integer(
  "identities",
  8,
  "How many people (at least 2: some go to the test split).",
  lower_bound=2,
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "size",
  64,
  "Width of the pictures.",
  lower_bound=render.MIN_SIZE,
  upper_bound=render.MAX_SIZE,
  flag_values=FLAGS,
)


def identity_name(i: int) -> str:
  return f"person{i + 1:02d}"


def make_example(
  root, num_identities: int = 8, size: int = 64, seed: int = 0, gazes: Sequence[str] = GAZES
) -> pathlib.Path:
  """Writes the example folder into ``root`` (created if needed) and returns it."""
  if num_identities < 2:
    raise ValueError("num_identities must be at least 2 (some identities go to the test split)")
  root = pathlib.Path(root)
  (root / "photos").mkdir(parents=True, exist_ok=True)
  rows, faces = [], []
  for i in range(num_identities):
    ident = factors_lib.identity_params([seed, i])
    for e, expression in enumerate(EXPRESSIONS):
      for gaze in gazes:
        file = f"photos/{identity_name(i)}_{expression}_{gaze}.png"
        rows.append((file, identity_name(i), expression, gaze))
        faces.append(factors_lib.Factors(ident, e, 0.0 if e == 0 else 1.0, 0, GAZES.index(gaze), 0))
  images = render.render_batch(faces, size)
  margin = size // 6  # above and below: a size x (size + 2 margin) portrait frame
  for (file, *_), image in zip(rows, images):
    frame = np.empty((size + 2 * margin, size, 3), np.uint8)
    frame[:] = image[0, 0]  # the background colour
    frame[margin : margin + size] = image
    Image.fromarray(frame).save(root / file)
  with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
  return root


def main(argv: Sequence[str]) -> None:
  """absl's main: ``argv[1]`` is the folder to write."""
  if len(argv) != 2:
    raise errors.CommandLineError("give one folder to write the example into")
  root = make_example(argv[1], FLAGS.identities, FLAGS.size)
  n = FLAGS.identities * len(EXPRESSIONS) * len(GAZES)
  print(f"Wrote {n} images and {root / 'labels.csv'}")


if __name__ == "__main__":
  cli.run(main, FLAGS, positional=True)

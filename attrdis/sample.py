"""Makes images with a trained model: ``python -m attrdis.sample --workdir=W --mode=MODE ...``.

The model and its config are restored from W's checkpoint (the latest, or ``--step``).
Inputs (``--source``, ``--target``, ``--onto``) are image files, folders of images or a
dataset split (``split:test``, ``split:test[:8]``), comma-separated or repeated. Your own
images go through the same crop and resize as the dataset the model was trained on (that
dataset's ``preprocess_image``), then are scaled to the model's input size.

Modes (codes are named by the model's attributes, and ``rest`` for z_0):
  transfer     each source decoded with the --attributes codes of each target (no labels).
               Grid: first row the targets, first column the sources, top-left blank.
  interpolate  the --attributes codes go linearly from each source's to its target's
               (Eq. 12) in --steps steps; the other codes are the source's, or --onto's.
               Grid: one row per source/target pair, --steps columns.
  mix          one attribute's code a convex combination (Eq. 11) of the --source images'
               codes, with --weights (w1,w2,...; several sets separated by ';') or --num
               random weights (seeded by --seed); the other codes are the first source's.
               Grid: first row the sources, then the mixtures.
  label        each source taken to every class (or --classes) of one attribute through
               that class's mean code over the training split (computed once, cached in
               W/mean_codes/step_<N>.npz). Grid: one row per source: it, then each class.
  random       --num new images, each from the codes of different random training images
               (or --source images) per attribute. Grid: one row per new image: the images
               that gave each code (attributes, then rest), then the new image.

Writes --out (a PNG grid), a JSON sidecar (same name, .json) saying which inputs and
weights made each cell, and with --save_individual every tile as its own PNG in a folder
next to --out (<out>_images/).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

from absl import flags
from absl import logging
import numpy as np

from attrdis import checkpoints
from attrdis import cli
from attrdis import compilation_cache
from attrdis import errors
from attrdis import image_io
from attrdis import images as images_lib
from attrdis import input_pipeline
from attrdis import sampling
from attrdis.configuration import ConfigError

MODES = ("transfer", "interpolate", "mix", "label", "random")
DEFAULT_NUM = 8
MAX_COLUMNS = 8  # mix: mixtures per grid row


FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "The training workdir (its checkpoints/).", flag_values=FLAGS)
flags.DEFINE_integer(
  "step", None, "The checkpoint step to use (default: the latest).", flag_values=FLAGS
)
flags.DEFINE_enum("mode", None, MODES, "What to make (see above).", flag_values=FLAGS)
flags.DEFINE_multi_string(
  "source",
  None,
  "Images: files, folders or split:NAME[a:b], comma-separated or "
  "repeated. User images get the training dataset's crop and resize.",
  flag_values=FLAGS,
)
flags.DEFINE_multi_string(
  "target",
  None,
  "transfer/interpolate: the images whose codes are taken (as --source).",
  flag_values=FLAGS,
)
flags.DEFINE_multi_string(
  "onto",
  None,
  "interpolate: an image (or one per pair) giving the codes that are not interpolated.",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "attributes",
  None,
  "Comma-separated attribute names whose codes are transferred, interpolated "
  "or mixed; 'rest' names z_0. Empty for none (transfer).",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "steps", 8, "interpolate: columns, endpoints included (>= 2).", flag_values=FLAGS
)
flags.DEFINE_string(
  "weights",
  None,
  "mix: convex weights, one per source (w1,w2,...); several sets separated "
  "by ';'. Default: --num random sets.",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "num", None, f"mix/random: how many images to make (default {DEFAULT_NUM}).", flag_values=FLAGS
)
flags.DEFINE_integer("seed", 0, "mix/random: the random seed.", flag_values=FLAGS)
flags.DEFINE_string(
  "classes",
  None,
  "label: comma-separated class names (default: every class with training images).",
  flag_values=FLAGS,
)
flags.DEFINE_string("out", None, "The PNG grid to write (FILE.png).", flag_values=FLAGS)
flags.DEFINE_bool(
  "save_individual", False, "Also write each tile as a PNG in <out>_images/.", flag_values=FLAGS
)
flags.DEFINE_integer("batch_size", 32, "Images per jitted batch.", flag_values=FLAGS)
flags.DEFINE_string(
  "data_dir",
  None,
  "Where the dataset is prepared, if not where the config says.",
  flag_values=FLAGS,
)
flags.DEFINE_string("compilation_cache", None, compilation_cache.FLAG_HELP, flag_values=FLAGS)
flags.mark_flags_as_required(["workdir", "mode", "out"], flag_values=FLAGS)


# ----------------------------------------------------------------------------------------
# A grid of cells: None (blank), an input, or a generated image with its recipe.


class Grid:
  def __init__(self, rows: int, cols: int):
    self.rows, self.cols = rows, cols
    self.cells: dict[tuple[int, int], dict[str, Any]] = {}
    self.pixels: dict[tuple[int, int], np.ndarray] = {}

  def put_input(self, r: int, c: int, role: str, inputs: image_io.Inputs, i: int) -> None:
    self.cells[r, c] = {"kind": "input", "role": role, "input": inputs.names[i]}
    self.pixels[r, c] = inputs.images[i]

  def put_output(self, r: int, c: int, image: np.ndarray, recipe, describe) -> None:
    self.cells[r, c] = {"kind": "generated", "codes": describe(recipe)}
    self.pixels[r, c] = image

  def array(self, size: int) -> np.ndarray:
    out = np.ones((self.rows, self.cols, size, size, 3), np.float32)  # blank = white
    for (r, c), px in self.pixels.items():
      out[r, c] = px
    return out


def _describer(
  code_names: Sequence[str],
  inputs: dict[str, image_io.Inputs],
  class_names: Sequence[str] | None = None,
  class_split: str = "train",
):
  def term(role, i, w):
    if role == "class":
      return {"class": class_names[i], "mean_over": class_split, "weight": round(w, 6)}
    return {"role": role, "input": inputs[role].names[i], "weight": round(w, 6)}

  def describe(recipe):
    return {code_names[m]: [term(*t) for t in terms] for m, terms in enumerate(recipe)}

  return describe


# ----------------------------------------------------------------------------------------


def _parse_weights(text: str) -> list[list[float]]:
  sets = []
  for part in text.split(";"):
    if not part.strip():
      continue
    try:
      sets.append([float(x) for x in part.split(",")])
    except ValueError:
      raise errors.CommandLineError(
        f"--weights={text!r}: write numbers separated by commas (sets by ';'), e.g. "
        "--weights=0.5,0.3,0.2"
      ) from None
  if not sets:
    raise errors.CommandLineError("--weights is empty")
  if len({len(s) for s in sets}) > 1:
    raise errors.CommandLineError("--weights: every set must have one weight per source")
  return sets


def _need(args, *names: str) -> None:
  for n in names:
    if getattr(args, n) is None:
      raise errors.CommandLineError(f"--mode={args.mode} needs --{n}")


def _check_args(args) -> None:
  if not args.out.lower().endswith(".png"):
    raise errors.CommandLineError(f"--out={args.out}: give a .png file name")
  if args.batch_size < 1:
    raise errors.CommandLineError("--batch_size must be positive")
  if args.num is not None and args.num < 1:
    raise errors.CommandLineError("--num must be positive")
  need = {
    "transfer": ("source", "target", "attributes"),
    "interpolate": ("source", "target", "attributes"),
    "mix": ("source", "attributes"),
    "label": ("source", "attributes"),
    "random": (),
  }[args.mode]
  _need(args, *need)
  if args.mode == "interpolate" and args.steps < 2:
    raise errors.CommandLineError(f"--steps={args.steps}: interpolation needs at least 2 steps")
  if args.weights is not None and args.mode != "mix":
    raise errors.CommandLineError("--weights is for --mode=mix")
  if args.onto is not None and args.mode != "interpolate":
    raise errors.CommandLineError("--onto is for --mode=interpolate")
  if args.classes is not None and args.mode != "label":
    raise errors.CommandLineError("--classes is for --mode=label")


class _Dataset:
  """The model's dataset, prepared on first use (only split sources, label and random)."""

  def __init__(self, config):
    self.config = config
    self._loaded = None

  def get(self):
    if self._loaded is None:
      try:
        self._loaded = input_pipeline.load(self.config)
      except ConfigError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        first = errors.one_line(str(e))[:300] or type(e).__name__
        raise errors.InputError(
          f"cannot open dataset {self.config.dataset.name} (data_dir "
          f"{self.config.dataset.data_dir or 'default'}): {first}"
        ) from None
    return self._loaded

  def builder(self):
    return self.get()[0]

  def info(self):
    return self.get()[1]


def _load_quietly(workdir: str, step: int | None):
  """``checkpoints.load_trained`` without Orbax's page of INFO lines."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return checkpoints.load_trained(workdir, step)
  finally:
    logging.set_verbosity(verbosity)


def run(args) -> dict[str, Any]:
  """Does what the parsed command line asks (``args``: the flags, :data:`FLAGS`, or any
  object with the same attributes); returns the JSON sidecar's contents."""
  _check_args(args)
  weight_sets = _parse_weights(args.weights) if args.weights is not None else None
  trained = _load_quietly(args.workdir, args.step)
  config = trained.config
  if args.data_dir:
    config.dataset.data_dir = args.data_dir
  attributes = tuple(config.dataset.attributes)
  names = sampling.code_names(attributes)
  dataset = _Dataset(config)
  chosen: list[int] = []
  if args.attributes is not None:
    chosen = sampling.attribute_indices(
      [a for a in args.attributes.split(",") if a.strip()], attributes
    )
  logging.info("Model %s at step %d: codes %s.", args.workdir, trained.step, ", ".join(names))
  sampler = sampling.Sampler.from_trained(trained, batch_size=args.batch_size)
  load = lambda v, what: image_io.load_source(v, config, dataset.builder, what=what)
  size = int(config.image_size)
  meta: dict[str, Any] = {
    "mode": args.mode,
    "workdir": os.path.abspath(args.workdir),
    "step": trained.step,
    "code_slots": list(names),
    "attributes": [names[k] for k in chosen],
  }

  if args.mode == "transfer":
    src, tgt = load(args.source, "--source"), load(args.target, "--target")
    s = sampler.transfer(src.images, tgt.images, chosen)
    describe = _describer(names, {"source": src, "target": tgt})
    grid = Grid(len(src) + 1, len(tgt) + 1)
    for j in range(len(tgt)):
      grid.put_input(0, j + 1, "target", tgt, j)
    for i in range(len(src)):
      grid.put_input(i + 1, 0, "source", src, i)
      for j in range(len(tgt)):
        grid.put_output(i + 1, j + 1, s.images[i, j], s.recipes[i][j], describe)

  elif args.mode == "interpolate":
    src, tgt = load(args.source, "--source"), load(args.target, "--target")
    onto = load(args.onto, "--onto") if args.onto is not None else None
    s = sampler.interpolate(
      src.images, tgt.images, chosen, args.steps, onto=None if onto is None else onto.images
    )
    roles = {"source": src, "target": tgt}
    if onto is not None:
      roles["onto"] = onto
    describe = _describer(names, roles)
    grid = Grid(s.images.shape[0], args.steps)
    for q in range(s.images.shape[0]):
      for c in range(args.steps):
        grid.put_output(q, c, s.images[q, c], s.recipes[q][c], describe)
    meta["alphas"] = [float(a) for a in np.linspace(0.0, 1.0, args.steps)]

  elif args.mode == "mix":
    if len(chosen) != 1:
      raise errors.CommandLineError(
        "--mode=mix mixes one attribute's codes: give one in --attributes"
      )
    src = load(args.source, "--source")
    if weight_sets is not None:
      if args.num is not None and args.num != len(weight_sets):
        raise errors.CommandLineError(
          f"--num={args.num} but --weights gives {len(weight_sets)} set(s)"
        )
      weights = sampling.check_weights(weight_sets, len(src))
    else:
      if len(src) < 2:
        raise errors.CommandLineError("--mode=mix needs at least two --source images")
      weights = sampling.random_convex_weights(len(src), args.num or DEFAULT_NUM, args.seed)
      meta["seed"] = args.seed
    s = sampler.mix(src.images, chosen[0], weights)
    describe = _describer(names, {"source": src})
    num = len(weights)
    cols = max(len(src), min(num, MAX_COLUMNS))
    grid = Grid(1 + math.ceil(num / cols), cols)
    for i in range(len(src)):
      grid.put_input(0, i, "source", src, i)
    for n in range(num):
      grid.put_output(1 + n // cols, n % cols, s.images[n], s.recipes[n], describe)
    meta["weights"] = [[float(x) for x in row] for row in weights]

  elif args.mode == "label":
    if len(chosen) != 1 or chosen[0] == len(attributes):
      raise errors.CommandLineError(
        "--mode=label needs one labelled attribute in --attributes (not rest)"
      )
    k = chosen[0]
    src = load(args.source, "--source")
    class_names = list(dataset.info().class_names[k])
    if args.classes is not None:  # names checked before the mean codes are computed
      unknown = [c for c in args.classes.split(",") if c.strip() and c.strip() not in class_names]
      if unknown:
        raise sampling.SamplingError(
          f"--classes: {attributes[k]} has no class {unknown[0].strip()!r}; it has "
          f"{', '.join(class_names[:20])}{', ...' if len(class_names) > 20 else ''}"
        )
    means = sampling.load_or_compute_mean_codes(
      args.workdir, trained, dataset.builder(), k, batch_size=args.batch_size
    )
    present = [c for c in range(len(class_names)) if np.all(np.isfinite(means[c]))]
    if args.classes is not None:
      classes = []
      for name in (x.strip() for x in args.classes.split(",") if x.strip()):
        c = class_names.index(name)
        if c not in present:
          raise sampling.SamplingError(
            f"--classes: {attributes[k]} class {name!r} has no training images, so no mean code"
          )
        classes.append(c)
      if not classes:
        raise errors.CommandLineError("--classes names no class")
    else:
      classes = present
      if len(present) < len(class_names):
        logging.info(
          "Leaving out %d %s classes with no training images.",
          len(class_names) - len(present),
          attributes[k],
        )
    s = sampler.to_classes(src.images, k, means, classes)
    describe = _describer(names, {"source": src}, class_names)
    grid = Grid(len(src), 1 + len(classes))
    for i in range(len(src)):
      grid.put_input(i, 0, "source", src, i)
      for j in range(len(classes)):
        grid.put_output(i, j + 1, s.images[i, j], s.recipes[i][j], describe)
    meta["classes"] = [class_names[c] for c in classes]
    meta["mean_codes"] = sampling.mean_codes_path(args.workdir, trained.step)

  else:  # random
    num = args.num or DEFAULT_NUM
    items = image_io.split_items(args.source) if args.source else ["split:train"]
    if len(items) == 1 and items[0].startswith(image_io.SPLIT_PREFIX):
      spec = items[0][len(image_io.SPLIT_PREFIX) :]
      donors = sampling.random_donors(
        image_io.split_size(dataset.builder(), spec), num, len(names), args.seed
      )
      used = sorted(set(donors.ravel().tolist()))
      pool = image_io.load_split(dataset.builder(), spec, config, indices=used)
      donors = np.searchsorted(np.asarray(used), donors)
    else:
      pool = load(items, "--source")
      donors = sampling.random_donors(len(pool), num, len(names), args.seed)
    s = sampler.recombine(pool.images, donors)
    describe = _describer(names, {"pool": pool})
    grid = Grid(num, len(names) + 1)
    for n in range(num):
      for m in range(len(names)):
        grid.put_input(n, m, f"donor of {names[m]}", pool, int(donors[n, m]))
      grid.put_output(n, len(names), s.images[n], s.recipes[n], describe)
    meta["seed"] = args.seed

  return write(args, grid, size, meta)


def write(args, grid: Grid, size: int, meta: dict[str, Any]) -> dict[str, Any]:
  out = os.path.abspath(args.out)
  images_lib.save_png(images_lib.make_grid(grid.array(size)), out)
  folder = os.path.splitext(out)[0] + "_images"
  cells = []
  for (r, c), cell in sorted(grid.cells.items()):
    cell = {"row": r, "col": c, **cell}
    if args.save_individual:
      path = os.path.join(folder, f"r{r:02d}_c{c:02d}.png")
      images_lib.save_png(images_lib.to_uint8(grid.pixels[r, c]), path)
      cell["file"] = os.path.relpath(path, os.path.dirname(out))
    cells.append(cell)
  meta.update(
    {
      "image": os.path.basename(out),
      "rows": grid.rows,
      "cols": grid.cols,
      "tile_size": size,
      "pad": 2,
      "cells": cells,
    }
  )
  sidecar = os.path.splitext(out)[0] + ".json"
  with open(sidecar, "w") as f:
    json.dump(meta, f, indent=1)
  print(
    f"wrote {out} ({grid.rows}x{grid.cols} tiles of {size} px) and {sidecar}"
    + (f"; tiles in {folder}" if args.save_individual else "")
  )
  return meta


def main(argv: Sequence[str]) -> None:
  """Makes what the flags ask (absl's main; no positional arguments)."""
  del argv
  logging.set_verbosity(logging.INFO)
  compilation_cache.enable(FLAGS.compilation_cache)
  run(FLAGS)


if __name__ == "__main__":
  cli.run(main, FLAGS)

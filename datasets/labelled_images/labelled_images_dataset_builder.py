"""Your own labelled images: a folder of images plus a CSV of labels, or one sub-folder per class.

Two layouts of the folder (the TFDS *manual dir*):

* **CSV** (``labels.csv``, or ``labels_file``): a header row ``file,<attribute>,...`` and one
  row per image. ``file`` is the image's path relative to the folder; every other column is an
  attribute whose values (any text) are its classes; an optional ``split`` column (``train`` or
  ``test``) fixes the split.
* **class folders** (no labels file): ``<folder>/<class>/<image>`` for one attribute, named by
  ``class_attribute`` (default ``label``).

Labels: one ``ClassLabel`` per attribute, its class names the values found, sorted (as text).
Extra features: ``file_name`` (relative to the folder), ``flipped``. Images: EXIF orientation
applied, cropped (``crop``: ``center`` = the largest centred square, ``none`` = the whole image,
squeezed to a square, or a fixed box ``left,top,right,bottom`` in pixels), Lanczos-resized to
``image_size``. Test split (``split_by``): the ``split`` column, or whole values of one column
held out (``identity`` by default: the test identities are never seen in training), or random
images; ``test_size`` is a fraction (< 1) or a count (>= 1) of those values or images, drawn
with ``split_seed``. ``flip`` adds every training image mirrored left-right, with the classes
of ``flip_swap`` (``"gaze:left=right"``) exchanged.

Every problem with the input stops the build with one message that names the file and, for
the CSV, the line (line 1 is the header): a missing or unreadable image (or, with
``skip_bad_images``, the image is skipped and listed in ``info.metadata['skipped_images']``), an
unknown column, an empty label or class folder, a class found only in the test split, a file
listed twice, text that is not UTF-8.

Build: ``tfds build datasets/labelled_images --manual_dir=DIR [--config='{"name": "mine",
"image_size": 64}']``, or train with ``configs/folder.py`` (prepared on first use). See
docs/folder_dataset.md.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import posixpath
import re
from typing import Any, Iterable, Mapping, Sequence

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
import tensorflow_datasets as tfds

from attrdis import errors
from attrdis.images import IMAGE_EXTENSIONS
from attrdis_datasets import features as features_lib
from attrdis_datasets import vendor

DATASET = "labelled_images"
DEFAULT_LABELS_FILE = "labels.csv"
FILE_COLUMN = "file"
SPLIT_COLUMN = "split"
SPLITS = ("train", "test")
IDENTITY = "identity"  # a column of this name holds people: never checked for unseen values
# Feature names the builder uses itself, and "rest", the name of the code z_0.
RESERVED = ("image", "file_name", "flipped", "rest")
CROPS = ("center", "none")
SPLIT_MODES = ("auto", "split", "random")  # or the name of a column
FLIP_SUFFIX = "#flipped"  # key suffix of the mirrored training examples
NUM_LISTED = 5  # how many files/lines a message names before "and N more"
_BAD_NAME = re.compile(r"[\s,()'\"]")

_INSTRUCTIONS = """\
Give as the manual dir a folder of your images with either
  * a CSV file labels.csv in it: a header row file,<attribute>,<attribute>,... and one row per
    image, e.g. `photos/ann_01.jpg,ann,happy` under `file,identity,expression`; the file paths
    are relative to the folder; an optional column `split` (train/test) fixes the split; or
  * one sub-folder per class of a single attribute: <folder>/<class>/<image>.
See docs/folder_dataset.md. Then train with
  python run_train.py --config=configs/folder.py --workdir=W --config.dataset.manual_dir=DIR \\
      --config.dataset.attributes=expression,identity
or build alone with tfds build datasets/labelled_images --manual_dir=DIR.
"""


class FolderDataError(errors.InputError):
  """Bad input in the folder; the message names the file and, for the CSV, the line."""


class BadImageError(vendor.BadImageError, errors.InputError):
  """An image that is missing or cannot be read (and ``skip_bad_images`` is off)."""


# --------------------------------------------------------------------------------------------
# The options


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  """The options of a labelled folder (the same names as ``config.dataset.folder.*``).

  labels_file: the CSV in the folder; when it does not exist, the class-folder layout is read.
  class_attribute: the attribute the class folders define (class-folder layout only).
  crop: ``center``, ``none`` or ``left,top,right,bottom`` (pixels of the image files).
  image_size: side of the stored images.
  split_by: ``auto`` (the ``split`` column if there is one, else the ``identity`` column if
    there is one, else random images), ``split``, ``random``, or the column whose values are
    held out whole.
  test_size: how many of those values (or images) go to the test split: a fraction (< 1) or a
    count (>= 1).
  split_seed: seeds the draw of the test values (or images).
  flip: also store every training image mirrored left-right.
  flip_swap: classes exchanged in the mirrored images, ``"attribute:a=b"`` each.
  """

  labels_file: str = DEFAULT_LABELS_FILE
  class_attribute: str = "label"
  crop: str = "center"
  image_size: int = 128
  split_by: str = "auto"
  test_size: float = 0.2
  split_seed: int = 0
  flip: bool = False
  flip_swap: tuple[str, ...] = ()

  def __post_init__(self):
    if isinstance(self.flip_swap, str):  # one entry, or "a:x=y,b:u=v"
      self.flip_swap = tuple(s.strip() for s in self.flip_swap.split(",") if s.strip())
    else:
      self.flip_swap = tuple(self.flip_swap)

  def options(self) -> dict[str, Any]:
    """The options as a JSON-able dict (what the prepared dataset records)."""
    out = {f: _json_value(getattr(self, f)) for f in OPTION_FIELDS}
    if isinstance(out["test_size"], int):  # 3 and 3.0 are the same option
      out["test_size"] = float(out["test_size"])
    return out

  def check(self) -> None:
    """Raises ValueError naming the option (``name=value: why``) if an option cannot work."""
    check_options(self.options())


_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
OPTION_FIELDS = tuple(
  f.name for f in dataclasses.fields(FolderConfig) if f.name not in _BASE_FIELDS
)
DEFAULT_OPTIONS = {
  f.name: f.default for f in dataclasses.fields(FolderConfig) if f.name in OPTION_FIELDS
}


def _json_value(v):
  if isinstance(v, (tuple, list)):
    return [_json_value(x) for x in v]
  if isinstance(v, (bool, np.bool_)):
    return bool(v)
  if isinstance(v, (int, np.integer)):
    return int(v)
  if isinstance(v, (float, np.floating)):
    return float(v)
  return v


def parse_crop(crop: str) -> str | tuple[int, int, int, int]:
  """``center``/``none`` or the box ``(left, top, right, bottom)``; ValueError if neither."""
  text = str(crop).strip().lower()
  if text in CROPS:
    return text
  parts = [p.strip() for p in text.split(",")]
  try:
    box = tuple(int(p) for p in parts)
  except ValueError:
    box = ()
  if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(
      f"crop={crop!r}: give center, none or a box left,top,right,bottom in "
      "pixels with left < right and top < bottom (e.g. 20,40,220,240)"
    )
  return box  # type: ignore[return-value]


def parse_flip_swap(entries: Sequence[str]) -> dict[str, dict[str, str]]:
  """``("gaze:left=right", ...)`` → ``{"gaze": {"left": "right", "right": "left"}}``."""
  swaps: dict[str, dict[str, str]] = {}
  for entry in entries:
    attribute, sep, pair = str(entry).partition(":")
    a, eq, b = pair.partition("=")
    attribute, a, b = attribute.strip(), a.strip(), b.strip()
    if not sep or not eq or not attribute or not a or not b or a == b:
      raise ValueError(
        f"flip_swap entry {entry!r}: write attribute:class=class, e.g. gaze:left=right"
      )
    table = swaps.setdefault(attribute, {})
    for x in (a, b):
      if x in table:
        raise ValueError(
          f"flip_swap entry {entry!r}: {attribute} class {x!r} is already swapped by another entry"
        )
    table[a], table[b] = b, a
  return swaps


def check_options(options: Mapping[str, Any]) -> None:
  """ValueError ``name=value: why`` for the first option that cannot work."""
  o = dict(DEFAULT_OPTIONS, **options)
  unknown = sorted(set(options) - set(OPTION_FIELDS))
  if unknown:
    raise ValueError(f"{unknown[0]}: no such option (the options are {', '.join(OPTION_FIELDS)})")
  if not str(o["labels_file"]).strip() or os.path.isabs(str(o["labels_file"])):
    raise ValueError(f"labels_file={o['labels_file']!r}: give a file name inside the folder")
  if _BAD_NAME.search(str(o["class_attribute"])) or not o["class_attribute"]:
    raise ValueError(
      f"class_attribute={o['class_attribute']!r}: must be a name without "
      "spaces, commas, brackets or quotes"
    )
  parse_crop(o["crop"])
  size = o["image_size"]
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"image_size={size!r}: must be a positive integer")
  if not str(o["split_by"]).strip():
    raise ValueError(f"split_by={o['split_by']!r}: give auto, split, random or a column name")
  t = o["test_size"]
  if (
    isinstance(t, bool)
    or not isinstance(t, (int, float))
    or not np.isfinite(t)
    or t <= 0
    or (t >= 1 and float(t) != int(t))
  ):
    raise ValueError(
      f"test_size={t!r}: give a fraction in (0, 1) or a whole number >= 1 of "
      "values (or images) to hold out"
    )
  swaps = o["flip_swap"]
  parse_flip_swap((swaps,) if isinstance(swaps, str) and swaps else swaps or ())
  if swaps and not o["flip"]:
    raise ValueError(
      f"flip_swap={tuple(swaps) if not isinstance(swaps, str) else swaps!r}: "
      "only used with flip=True"
    )


# --------------------------------------------------------------------------------------------
# Images


def crop_box(width: int, height: int, crop) -> tuple[int, int, int, int]:
  """The box (left, top, right, bottom) that ``crop`` (``center``/``none``/a box) takes from a
  width×height image; ValueError if a fixed box does not fit in the image."""
  crop = parse_crop(crop) if isinstance(crop, str) else tuple(crop)
  if crop == "none":
    return (0, 0, width, height)
  if crop == "center":
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)
  left, top, right, bottom = crop
  if right > width or bottom > height:
    raise ValueError(
      f"the crop box {left},{top},{right},{bottom} does not fit in the {width}x{height} image"
    )
  return (left, top, right, bottom)


def preprocess_image(img: Image.Image, image_size: int, crop="center") -> np.ndarray:
  """The builder's preprocessing of one image: EXIF orientation applied, ``crop``, Lanczos
  resize to image_size², RGB uint8 (image_size, image_size, 3)."""
  img = ImageOps.exif_transpose(img) or img
  return vendor.crop_resize(img, crop_box(*img.size, crop), image_size)


def preprocess_for(dataset_config):
  """``preprocess_image(img, size)`` with the crop of ``config.dataset`` (for sampling your
  own photos the way the model's dataset was made)."""
  crop = parse_crop(_folder_options(dataset_config).get("crop", "center"))
  return lambda img, image_size: preprocess_image(img, image_size, crop)


def _is_image(name: str) -> bool:
  base = name.rpartition("/")[2]
  return base.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".")


def _hidden(rel: str) -> bool:
  return any(part.startswith(".") for part in rel.split("/"))


# --------------------------------------------------------------------------------------------
# Reading the folder


@dataclasses.dataclass
class Row:
  line: int  # in the labels file (1 = the header); 0 in the class-folder layout
  file: str  # relative to the folder, POSIX
  labels: dict[str, str]
  split: str | None = None


@dataclasses.dataclass
class Table:
  source: str  # "labels.csv" or "the class folders"
  path: pathlib.Path  # the labels file, or the folder
  columns: tuple[str, ...]  # the attributes, in the order of the header
  rows: list[Row]
  has_split_column: bool
  unlisted: list[str]  # images in the folder that no row names
  skipped: list[dict[str, str]]  # rows dropped for a missing image (skip_bad_images)

  def where(self, row: Row) -> str:
    """'DIR/labels.csv line 7' or 'DIR/happy/x.png'."""
    if row.line:
      return f"{self.path} line {row.line}"
    return str(self.path / row.file)


def _listing(items: Sequence[str]) -> str:
  shown = ", ".join(str(i) for i in items[:NUM_LISTED])
  more = len(items) - NUM_LISTED
  return shown + (f" and {more} more" if more > 0 else "")


def _decode_utf8(data: bytes, path: pathlib.Path) -> str:
  if data.startswith(codecs.BOM_UTF8):
    data = data[len(codecs.BOM_UTF8) :]
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    raise FolderDataError(
      f"{DATASET}: {path} line {line} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
      f"character {column}); save the file as UTF-8 (\"CSV UTF-8\" in spreadsheet "
      "programs)"
    ) from None


def _delimiter(header_line: str) -> str:
  """',' unless the header uses ';' or tabs instead (spreadsheets in some locales)."""
  if "," in header_line:
    return ","
  for d in (";", "\t"):
    if d in header_line:
      return d
  return ","


def _check_column_name(name: str, path: pathlib.Path, index: int) -> None:
  if not name:
    raise FolderDataError(
      f"{DATASET}: {path} line 1: column {index + 1} has no name; the "
      "header row names every column (file,<attribute>,...)"
    )
  if _BAD_NAME.search(name):
    raise FolderDataError(
      f"{DATASET}: {path} line 1: column name {name!r} has spaces, "
      "commas, brackets or quotes; attribute names cannot"
    )
  if name in RESERVED:
    raise FolderDataError(
      f"{DATASET}: {path} line 1: the column name {name!r} is reserved "
      f"({', '.join(RESERVED)}); rename the column"
    )


def read_header(path: pathlib.Path) -> tuple[list[str], str, str]:
  """(column names, delimiter, decoded text) of a labels file; FolderDataError if unusable."""
  try:
    data = path.read_bytes()
  except OSError as e:
    raise FolderDataError(f"{DATASET}: cannot read {path}: {errors.os_reason(e)}") from None
  text = _decode_utf8(data, path)
  first = text.splitlines()[0] if text.strip() else ""
  if not first.strip():
    raise FolderDataError(
      f"{DATASET}: {path} line 1 is empty; the first row names the columns: file,<attribute>,..."
    )
  delimiter = _delimiter(first)
  header = [c.strip() for c in next(csv.reader(io.StringIO(first), delimiter=delimiter))]
  for i, name in enumerate(header):
    _check_column_name(name, path, i)
  seen = set()
  for name in header:
    if name in seen:
      raise FolderDataError(f"{DATASET}: {path} line 1: the column {name!r} appears twice")
    seen.add(name)
  if FILE_COLUMN not in header:
    raise FolderDataError(
      f"{DATASET}: {path} line 1: no {FILE_COLUMN!r} column (the header "
      f"is {','.join(header)}); the first row names the columns: "
      "file,<attribute>,..."
    )
  if not [c for c in header if c not in (FILE_COLUMN, SPLIT_COLUMN)]:
    raise FolderDataError(
      f"{DATASET}: {path} line 1: no attribute column (the header is "
      f"{','.join(header)}); add at least one column of labels"
    )
  return header, delimiter, text


def _normalise_file(cell: str) -> str | None:
  p = posixpath.normpath(cell.replace("\\", "/"))
  if p.startswith("/") or p == ".." or p.startswith("../") or re.match(r"^[A-Za-z]:", p):
    return None
  return p


def read_csv(root: pathlib.Path, labels_file: str) -> Table:
  """The rows of the labels file, checked (not yet against the image files)."""
  path = root / labels_file
  header, delimiter, text = read_header(path)
  columns = tuple(c for c in header if c not in (FILE_COLUMN, SPLIT_COLUMN))
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
  next(reader)
  rows: list[Row] = []
  first_line: dict[str, int] = {}
  end = reader.line_num
  for cells in reader:
    line, end = end + 1, reader.line_num
    cells = [c.strip() for c in cells]
    if not any(cells):
      continue  # a blank line
    where = f"{DATASET}: {path} line {line}"
    if len(cells) != len(header):
      raise FolderDataError(
        f"{where} has {len(cells)} cells; the header has {len(header)} ({','.join(header)})"
      )
    values = dict(zip(header, cells))
    for c in header:
      if "\n" in values[c] or "\r" in values[c]:
        raise FolderDataError(f"{where}: the {c} cell holds a line break")
    if not values[FILE_COLUMN]:
      raise FolderDataError(f"{where}: the file cell is empty")
    file = _normalise_file(values[FILE_COLUMN])
    if file is None:
      raise FolderDataError(
        f"{where}: the file {values[FILE_COLUMN]!r} is outside the folder; "
        "give paths relative to the folder"
      )
    if file in first_line:
      raise FolderDataError(
        f"{where}: the file {file} is listed again (first on line "
        f"{first_line[file]}); give each image one row"
      )
    first_line[file] = line
    for c in columns:
      if not values[c]:
        raise FolderDataError(
          f"{where}: the {c} cell is empty (an image needs a class for every attribute column)"
        )
    split = None
    if SPLIT_COLUMN in values:
      split = values[SPLIT_COLUMN].lower()
      if split not in SPLITS:
        raise FolderDataError(f"{where}: split {values[SPLIT_COLUMN]!r} is neither train nor test")
    rows.append(Row(line, file, {c: values[c] for c in columns}, split))
  if not rows:
    raise FolderDataError(f"{DATASET}: {path} has a header but no rows")
  return Table(labels_file, path, columns, rows, SPLIT_COLUMN in header, [], [])


def read_class_folders(root: pathlib.Path, attribute: str) -> Table:
  """One row per image under ``<root>/<class>/``; the class is the first folder's name."""
  files, _ = vendor.walk_files(root)
  classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
  rows, loose = [], []
  for f in files:
    if _hidden(f) or not _is_image(f):
      continue
    if "/" not in f:
      loose.append(f)
      continue
    rows.append(Row(0, f, {attribute: f.split("/", 1)[0]}))
  if not classes:
    raise FolderDataError(
      f"{DATASET}: {root} has no {DEFAULT_LABELS_FILE} and no class sub-folders "
      f"({len(loose)} image(s) directly in it). Give a labels file (file,<attribute>,...) or "
      "one sub-folder per class."
    )
  have = {r.labels[attribute] for r in rows}
  empty = [c for c in classes if c not in have]
  if empty:
    raise FolderDataError(
      f"{DATASET}: the class folder {root / empty[0]} has no images"
      f"{' (nor do ' + _listing(empty[1:]) + ')' if len(empty) > 1 else ''}; "
      f"add images ({', '.join(IMAGE_EXTENSIONS)}) or remove it"
    )
  for c in classes:
    if "\n" in c or "\r" in c:
      raise FolderDataError(f"{DATASET}: the class folder name {c!r} holds a line break")
  return Table("the class folders", root, (attribute,), rows, False, loose, [])


def scan(root: pathlib.Path, config: FolderConfig, skip_bad_images: bool = False) -> Table:
  """Reads the folder (CSV or class folders) and checks the image files exist."""
  labels = root / config.labels_file
  if labels.is_file():
    table = read_csv(root, config.labels_file)
  elif config.labels_file != DEFAULT_LABELS_FILE:
    raise FolderDataError(
      f"{DATASET}: the labels file {labels} does not exist (labels_file={config.labels_file!r})"
    )
  else:
    return read_class_folders(root, config.class_attribute)
  missing = [r for r in table.rows if not (root / r.file).is_file()]
  if missing:
    if not skip_bad_images:
      r = missing[0]
      more = (
        f" ({len(missing)} rows name missing files: lines {_listing([m.line for m in missing])})"
        if len(missing) > 1
        else ""
      )
      raise BadImageError(
        f"{DATASET}: {table.where(r)}: the image {root / r.file} does not exist{more}. Fix "
        "the path or remove the row, or set skip_bad_images to skip such rows (they are then "
        "listed in the dataset info metadata 'skipped_images')."
      )
    for r in missing:
      logging.warning(
        "%s: skipped %s: the image %s does not exist", DATASET, table.where(r), root / r.file
      )
      table.skipped.append({"file_name": r.file, "line": r.line, "error": "no such file"})
    gone = {id(r) for r in missing}
    table.rows = [r for r in table.rows if id(r) not in gone]
    if not table.rows:
      raise FolderDataError(f"{DATASET}: no image named in {table.path} exists")
  listed = {r.file for r in table.rows} | {m["file_name"] for m in table.skipped}
  files, _ = vendor.walk_files(root)
  table.unlisted = [f for f in files if _is_image(f) and not _hidden(f) and f not in listed]
  return table


# --------------------------------------------------------------------------------------------
# The split


@dataclasses.dataclass
class Split:
  train: list[Row]
  test: list[Row]
  rule: str
  held_out: str | None  # the column whose values are held out whole, if any
  test_values: list[str]
  kind: str  # "the split column", "random images", "identity values"


def num_held_out(n: int, test_size: float, what: str) -> int:
  k = max(1, round(test_size * n)) if test_size < 1 else int(test_size)
  if n < 2 or k >= n:
    raise FolderDataError(
      f"{DATASET}: test_size={test_size:g} holds out {k} of {n} {what}, which leaves "
      f"{n - k} for training; both splits need at least one (lower test_size or add data)"
    )
  return k


def split_mode(table: Table, split_by: str) -> str:
  """``split``, ``random`` or a column name, from the ``split_by`` option."""
  mode = str(split_by).strip()
  if mode == "auto":
    if table.has_split_column:
      return "split"
    return IDENTITY if IDENTITY in table.columns else "random"
  if mode == "split":
    if not table.has_split_column:
      raise FolderDataError(
        f"{DATASET}: split_by='split' but {table.path} has no "
        f"{SPLIT_COLUMN!r} column (its columns: {', '.join(table.columns)})"
      )
    return mode
  if table.has_split_column:
    raise FolderDataError(
      f"{DATASET}: {table.path} has a {SPLIT_COLUMN!r} column, which fixes "
      f"the split, and split_by={mode!r} asks for another; remove the column "
      "or set split_by to auto"
    )
  if mode != "random" and mode not in table.columns:
    raise FolderDataError(
      f"{DATASET}: split_by={mode!r} is not a column of {table.source} "
      f"(its columns: {', '.join(table.columns)})"
    )
  return mode


def make_split(table: Table, config: FolderConfig) -> Split:
  mode = split_mode(table, config.split_by)
  rows = sorted(table.rows, key=lambda r: r.file)
  if mode == "split":
    test = [r for r in rows if r.split == "test"]
    train = [r for r in rows if r.split == "train"]
    if not test or not train:
      raise FolderDataError(
        f"{DATASET}: the {SPLIT_COLUMN} column of {table.path} puts "
        f"{len(train)} image(s) in train and {len(test)} in test; both "
        "need at least one"
      )
    return Split(
      train,
      test,
      f"the {SPLIT_COLUMN} column of {table.source}",
      None,
      [],
      f"the {SPLIT_COLUMN} column",
    )
  rng = np.random.default_rng(int(config.split_seed))
  if mode == "random":
    k = num_held_out(len(rows), config.test_size, "images")
    chosen = set(rng.permutation(len(rows))[:k].tolist())
    test = [r for i, r in enumerate(rows) if i in chosen]
    train = [r for i, r in enumerate(rows) if i not in chosen]
    return Split(
      train,
      test,
      f"{k} of the {len(rows)} images, drawn at random (split_seed "
      f"{config.split_seed}), form the test split",
      None,
      [],
      f"{k} of the {len(rows)} images drawn at random",
    )
  values = sorted({r.labels[mode] for r in rows})
  k = num_held_out(len(values), config.test_size, f"{mode} values")
  test_values = sorted(values[i] for i in rng.permutation(len(values))[:k])
  held = set(test_values)
  return Split(
    [r for r in rows if r.labels[mode] not in held],
    [r for r in rows if r.labels[mode] in held],
    f"{k} of the {len(values)} {mode} values (drawn with split_seed "
    f"{config.split_seed}) form the test split: {_listing(test_values)}; all others "
    "train",
    mode,
    test_values,
    f"{k} of the {len(values)} {mode} values held out",
  )


def check_test_classes(table: Table, split: Split) -> None:
  """Every class of the test split occurs in training (but for held-out identities)."""
  exempt = {split.held_out, IDENTITY}
  for c in table.columns:
    if c in exempt:
      continue
    seen = {r.labels[c] for r in split.train}
    only = [r for r in split.test if r.labels[c] not in seen]
    if only:
      r = only[0]
      value = r.labels[c]
      count = sum(1 for o in only if o.labels[c] == value)
      raise FolderDataError(
        f"{DATASET}: {table.where(r)}: {c} {value!r} occurs only in the test split "
        f"({count} image(s); test split: {split.kind}), so the model never sees "
        "it in training; add training images of it, remove those rows, or change split_by, "
        "test_size or split_seed"
      )


def class_names(table: Table) -> dict[str, list[str]]:
  return {c: sorted({r.labels[c] for r in table.rows}) for c in table.columns}


def check_flip_swap(
  table: Table, config: FolderConfig, names: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, str]]:
  swaps = parse_flip_swap(config.flip_swap)
  for attribute, table_of in swaps.items():
    if attribute not in table.columns:
      raise FolderDataError(
        f"{DATASET}: flip_swap names {attribute!r}, not a column of "
        f"{table.source} (its columns: {', '.join(table.columns)})"
      )
    unknown = sorted(set(table_of) - set(names[attribute]))
    if unknown:
      raise FolderDataError(
        f"{DATASET}: flip_swap names the {attribute} class {unknown[0]!r}, "
        f"which no image has (the classes: {_listing(names[attribute])})"
      )
  return swaps


# --------------------------------------------------------------------------------------------
# Source fingerprint: tells whether a prepared dataset still matches its folder.


def fingerprint(root: pathlib.Path, labels_file: str = DEFAULT_LABELS_FILE) -> str:
  """sha256 of the labels file's bytes and of every image file's path and size."""
  h = hashlib.sha256()
  labels = root / labels_file
  if labels.is_file():
    h.update(b"labels\0")
    h.update(labels.read_bytes())
  files, _ = vendor.walk_files(root)
  for f in files:
    if _is_image(f) and not _hidden(f):
      try:
        size = (root / f).stat().st_size
      except OSError:
        size = -1
      h.update(f"{f}\0{size}\n".encode("utf-8", "surrogateescape"))
  return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The builder


def _set_features(info: tfds.core.DatasetInfo, features: tfds.features.FeaturesDict) -> None:
  # The attributes are the folder's columns, known only once the folder is read, while TFDS
  # takes the features from _info(). _info() declares none (TFDS then restores a prepared
  # dataset's features from its features.json, as for read-only builders) and the build sets
  # them here, before TFDS creates its split writer (tensorflow-datasets 4.9.10).
  info._features = features  # pylint: disable=protected-access


class Builder(vendor.ManualDirBuilder):
  """A labelled folder of images; labels are its CSV columns (or its class folders).

  ``skip_bad_images=True`` skips missing or unreadable images (listed in
  ``info.metadata['skipped_images']``) instead of stopping the build.
  """

  name = DATASET
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": features_lib.RAW_PIXELS_NOTE,
  }
  BUILDER_CONFIGS = [
    FolderConfig(
      name="default",
      description="labels.csv or class folders; centred square crop; 128 px; "
      "identity-disjoint test split of 20 % of the identities (if labelled, else 20 % of the "
      "images); no flips.",
    )
  ]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._prepared: dict[str, Any] | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    try:
      config.check()
    except ValueError as e:
      raise FolderDataError(f"{DATASET} config {config.name!r}: {e}") from None
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "Labelled images from a folder: one ClassLabel per column of its labels file (or "
        "per class folder), class names as found, sorted. Options: "
        + json.dumps(config.options(), sort_keys=True)
        + ". file_name is the image relative to the folder; flipped marks the mirrored "
        "training images."
      ),
      features=None,  # the folder's columns: set when the folder is read (_set_features)
      metadata=tfds.core.MetadataDict(),
    )

  def _download_and_prepare(self, dl_manager, download_config):
    self._prepared = self._read_folder(dl_manager)
    super()._download_and_prepare(dl_manager, download_config)

  def _read_folder(self, dl_manager) -> dict[str, Any]:
    config = self.builder_config
    root = _manual_dir(dl_manager)
    table = scan(root, config, self.skip_bad_images)
    split = make_split(table, config)
    check_test_classes(table, split)
    names = class_names(table)
    swaps = check_flip_swap(table, config, names) if config.flip else {}
    size = int(config.image_size)
    features = {"image": features_lib.image(size)}
    for c in table.columns:
      features[c] = tfds.features.ClassLabel(names=names[c])
    features["file_name"] = tfds.features.Text()
    features["flipped"] = tfds.features.Scalar(np.bool_)
    _set_features(self.info, tfds.features.FeaturesDict(features))

    meta = self.info.metadata
    meta["options"] = config.options()
    meta["source"] = {
      "folder": str(root.resolve()),
      "layout": table.source,
      "fingerprint": fingerprint(root, config.labels_file),
    }
    meta["attributes"] = list(table.columns)
    meta["class_names"] = names
    meta["test_split_rule"] = split.rule
    meta["test_values"] = split.test_values
    meta["num_rows"] = {"train": len(split.train), "test": len(split.test)}
    if table.unlisted:
      logging.warning(
        "%s: %d image(s) under %s are not named in %s and were not used: %s",
        DATASET,
        len(table.unlisted),
        root,
        table.source,
        _listing(table.unlisted),
      )
    meta["unlisted_files"] = {"count": len(table.unlisted), "first": table.unlisted[:20]}
    meta["skip_bad_images"] = self.skip_bad_images
    meta["skipped_images"] = list(table.skipped)
    logging.info(
      "%s: %s: attributes %s; %d training and %d test images; %s.",
      DATASET,
      root,
      ", ".join(f"{c} ({len(names[c])} classes)" for c in table.columns),
      len(split.train),
      len(split.test),
      split.rule,
    )
    return {"root": root, "table": table, "split": split, "swaps": swaps}

  def _split_generators(self, dl_manager):
    p = self._prepared
    if p is None:  # called outside download_and_prepare
      p = self._prepared = self._read_folder(dl_manager)
    return {
      "train": self._generate_examples(
        p["root"], p["table"], p["split"].train, p["swaps"] if self.builder_config.flip else None
      ),
      "test": self._generate_examples(p["root"], p["table"], p["split"].test, None),
    }

  def _preprocess(self, img: Image.Image) -> np.ndarray:
    config = self.builder_config
    upright = ImageOps.exif_transpose(img) or img
    try:
      box = crop_box(*upright.size, config.crop)
    except ValueError as e:
      raise FolderDataError(f"{e}; choose a box inside every image, or crop=center") from None
    return vendor.crop_resize(upright, box, int(config.image_size))

  def _generate_examples(
    self,
    root: pathlib.Path,
    table: Table,
    rows: Iterable[Row],
    swaps: Mapping[str, Mapping[str, str]] | None,
  ):
    reader = vendor.ImageReader(
      DATASET,
      self._preprocess,
      skip_bad_images=self.skip_bad_images,
      metadata=self.info.metadata,
      error_class=BadImageError,
      how_to_skip="set skip_bad_images",
      passthrough=(FolderDataError,),
    )
    for row in rows:
      try:
        image = reader.read(
          root / row.file, row.file, where=table.where(row), extra={"line": row.line}
        )
      except FolderDataError as e:
        raise FolderDataError(f"{DATASET}: {table.where(row)}: {root / row.file}: {e}") from None
      if image is None:
        continue
      example = {
        "image": features_lib.pixels(image),
        "file_name": row.file,
        "flipped": False,
        **row.labels,
      }
      yield row.file, example
      if swaps is not None:
        mirrored = {c: swaps.get(c, {}).get(v, v) for c, v in row.labels.items()}
        yield (
          row.file + FLIP_SUFFIX,
          dict(example, image=features_lib.pixels(image[:, ::-1]), flipped=True, **mirrored),
        )


def _manual_dir(dl_manager) -> pathlib.Path:
  try:
    return vendor.resolve_manual_dir(dl_manager, DATASET, "")
  except vendor.MissingManualDataError as e:
    what = str(e).strip().splitlines()[0].rstrip(".")
    raise FolderDataError(
      f"{what}; give the folder of your images and its labels.csv (or "
      "class sub-folders) as config.dataset.manual_dir (tfds build: "
      "--manual_dir)"
    ) from None


# --------------------------------------------------------------------------------------------
# From attrdis configs (config.dataset, with the options under config.dataset.folder)


def _folder_options(dataset_config) -> dict[str, Any]:
  folder = dataset_config.get("folder", None) if hasattr(dataset_config, "get") else None
  if folder is None:
    return {}
  items = folder.to_dict() if hasattr(folder, "to_dict") else dict(folder)
  return {k: v for k, v in items.items() if k != "skip_bad_images"}


def config_from_dataset(dataset_config) -> tuple[FolderConfig, bool]:
  """The builder config that ``config.dataset`` asks for, and skip_bad_images.

  The config's name is ``config.dataset.builder_config`` if given; otherwise ``default`` when
  every option has its default value, else ``<image_size>px_<hash of the options>``, so that
  each set of options is prepared once, in its own folder.
  """
  from attrdis.configuration import ConfigError  # pylint: disable=g-import-not-at-top

  raw = _folder_options(dataset_config)
  try:
    check_options(raw)
  except ValueError as e:
    raise ConfigError(f"config.dataset.folder.{e}") from None
  default = Builder.BUILDER_CONFIGS[0]
  config = FolderConfig(name="custom", **dict(DEFAULT_OPTIONS, **raw))
  options = config.options()
  name = str(dataset_config.get("builder_config", "") or "")
  if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
    raise ConfigError(
      f"config.dataset.builder_config={name!r}: for {DATASET} it names the "
      "prepared dataset: letters, digits, '_', '.', '-'"
    )
  if name in ("", default.name) and options == default.options():
    config = default
  elif name == default.name:
    raise ConfigError(
      f"config.dataset.builder_config={name!r}: the name of {DATASET}'s "
      "default options; give these options another name (or none)"
    )
  else:
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()
    config.name = name or f"{int(config.image_size)}px_{digest[:10]}"
    config.description = f"options {json.dumps(options, sort_keys=True)}"
  folder = dataset_config.get("folder", None)
  skip = bool(folder.get("skip_bad_images", False)) if folder is not None else False
  return config, skip


def builder_kwargs(dataset_config) -> dict[str, Any]:
  """What ``input_pipeline.get_builder`` passes to :class:`Builder` for ``config.dataset``."""
  config, skip = config_from_dataset(dataset_config)
  return {"config": config, "skip_bad_images": skip}


def label_columns(manual_dir: str, config: FolderConfig) -> tuple[str, tuple[str, ...]]:
  """(what was read, the attributes) of a folder not prepared yet: the header of its labels
  file, or the class-folder attribute. FolderDataError if the folder is unusable."""
  root = pathlib.Path(os.path.expanduser(manual_dir or ""))
  if not manual_dir or not root.is_dir():
    raise FolderDataError(
      f"{DATASET}: the manual dir {manual_dir!r} is not a folder; give the folder of your "
      "images and its labels.csv (or class sub-folders) as config.dataset.manual_dir"
    )
  labels = root / config.labels_file
  if labels.is_file():
    header, _, _ = read_header(labels)
    return str(labels), tuple(c for c in header if c not in (FILE_COLUMN, SPLIT_COLUMN))
  if config.labels_file != DEFAULT_LABELS_FILE:
    raise FolderDataError(
      f"{DATASET}: the labels file {labels} does not exist (labels_file={config.labels_file!r})"
    )
  return f"the class folders of {root}", (config.class_attribute,)


def check_prepared(builder, manual_dir: str) -> None:
  """For a prepared dataset: the options it was made with are the builder's, and the folder
  (if it is there) is the one it was made from. A folder whose files or labels changed since
  gets a warning (the prepared data is used: a model trained on it is still evaluated on it);
  another folder's data under the same options is an error."""
  meta = builder.info.metadata or {}
  name = builder.builder_config.name
  made_with = meta.get("options")
  want = builder.builder_config.options()
  if made_with is not None and made_with != want:
    diffs = ", ".join(
      f"{k}={made_with.get(k)!r} (asked: {want[k]!r})" for k in want if made_with.get(k) != want[k]
    )
    raise FolderDataError(
      f"{DATASET}: the dataset {name!r} in {builder.data_dir} was prepared with other options: "
      f"{diffs}; give config.dataset.builder_config another name for these options (or leave "
      "it empty to name it after them)"
    )
  source = meta.get("source") or {}
  root = pathlib.Path(os.path.expanduser(manual_dir or ""))
  if not manual_dir or not root.is_dir() or not source:
    return
  if fingerprint(root, builder.builder_config.labels_file) == source.get("fingerprint"):
    return
  if os.path.realpath(root) != os.path.realpath(source.get("folder", "")):
    raise FolderDataError(
      f"{DATASET}: the dataset {name!r} in {builder.data_dir} was prepared from "
      f"{source.get('folder')}, not from {root.resolve()}; give each folder its own "
      "config.dataset.builder_config name (or its own config.dataset.data_dir)"
    )
  logging.warning(
    "%s: %s has changed since the dataset %r in %s was prepared from it (its images or "
    "labels differ); the prepared data is used. To use the folder as it is now, delete %s "
    "or give config.dataset.builder_config a new name.",
    DATASET,
    root,
    name,
    builder.data_dir,
    builder.data_dir,
  )

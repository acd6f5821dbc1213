"""What the builders that read the user's own folder (the TFDS *manual dir*) share.

The builders of the licensed face databases (``datasets/{multipie,bu3dfe,rafd}``) derive from
:class:`VendorBuilder`, which does everything but what differs between the databases: it scans
the folder, splits the subjects, builds each example and reports the left-out and bad files.
A database's builder names its file scheme and test-split rule and writes only its own steps
(scan, what was left out, what each subject lacks, the test subjects, the preprocessing and the
examples of one image). The labelled-folder builder (``datasets/labelled_images``) shares the
``skip_bad_images`` option (:class:`ManualDirBuilder`) and the helpers:

* finding the manual dir, with an error that repeats the download instructions and the expected
  layout when it is missing, empty or holds no file named the vendor's way
  (:func:`resolve_manual_dir`, :func:`no_matching_files_error`);
* walking the folder (:func:`walk_files`) and saying which files were not used and why
  (:func:`report_unmatched`, :func:`report_ignored`, :func:`report_incomplete`);
* the bad-image policy (:class:`ImageReader`): an unreadable or truncated image stops the
  build with its path, unless the builder was made with ``skip_bad_images=True``, in which case
  it is skipped, logged and listed in the dataset info metadata under ``skipped_images``;
* crop + resize helpers (:func:`crop_resize`, :func:`clamp_box`) and PNG encoding.

"""

from __future__ import annotations

import abc
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from attrdis import errors

# How many file names / subjects a log line names before it says "and N more".
NUM_NAMED_IN_LOGS = 5

RESAMPLE = Image.Resampling.LANCZOS


class MissingManualDataError(errors.UserError, FileNotFoundError):
  """The manual dir is missing, empty, or holds no file named the way the vendor names them."""


class BadImageError(errors.UserError, ValueError):
  """An image file could not be read or preprocessed (and ``skip_bad_images`` is off)."""


class NotEnoughSubjectsError(errors.UserError, ValueError):
  """The manual dir holds too few subjects to form both the train and the test split."""


# --------------------------------------------------------------------------------------------
# Manual dir


def resolve_manual_dir(dl_manager, dataset_name: str, instructions: str) -> pathlib.Path:
  """``dl_manager.manual_dir`` as a ``pathlib.Path``, or a :class:`MissingManualDataError`.

  The error message holds the instructions (where to get the data, which folder to give and
  the layout expected), whatever TFDS itself says.
  """
  try:
    path = pathlib.Path(os.fspath(dl_manager.manual_dir))
  except (AssertionError, OSError) as e:  # TFDS: "Manual directory X does not exist or is empty"
    m = re.search(r"Manual directory (.*?) does not exist or is empty", str(e))
    what = (
      f"the manual dir {m.group(1)} does not exist or is empty"
      if m
      else f"no usable manual dir ({_first_line(str(e))})"
    )
    raise MissingManualDataError(f"{dataset_name}: {what}.\n\n{instructions.strip()}") from e
  if not path.is_dir():
    raise MissingManualDataError(
      f"{dataset_name}: the manual dir {path} is not a folder.\n\n{instructions.strip()}"
    )
  return path


def no_matching_files_error(
  dataset_name: str,
  root: pathlib.Path,
  files: Sequence[str],
  scheme: str,
  instructions: str,
  left_out: str = "",
) -> MissingManualDataError:
  """The error for a manual dir that holds files, none of them usable by the config.

  ``files``: the files not named the vendor's way; ``left_out``: what the config left out on
  purpose (e.g. "12 images of expressions not in this config"), if anything.
  """
  return MissingManualDataError(
    f"{dataset_name}: no file under {root} is named like {scheme} "
    f"({len(files)} other file(s) found{_listing(files)}"
    f"{'; left out by this config: ' + left_out if left_out else ''}). Give the folder "
    f"described below.\n\n{instructions.strip()}"
  )


def walk_files(
  root: pathlib.Path, keep_dir: Callable[[str, str], bool] | None = None
) -> tuple[list[str], int]:
  """All files under ``root`` as sorted POSIX paths relative to it, and the folders pruned.

  ``keep_dir(parent_rel, name)`` may prune subfolders (e.g. MultiPIE's other cameras) so that
  they are not even listed; the number of pruned folders is returned for reporting.
  """
  found: list[str] = []
  pruned = 0
  visited: set[str] = set()  # real paths: symlinked folders are followed, but never twice
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in visited:
      dirnames[:] = []
      continue
    visited.add(real)
    rel_dir = os.path.relpath(dirpath, root)
    rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
    if keep_dir is not None:
      kept = [d for d in dirnames if keep_dir(rel_dir, d)]
      pruned += len(dirnames) - len(kept)
      dirnames[:] = kept
    dirnames.sort()
    for f in filenames:
      found.append(f"{rel_dir}/{f}" if rel_dir else f)
  found.sort()
  return found, pruned


# --------------------------------------------------------------------------------------------
# Reporting (absl logging; the same facts go to the dataset info metadata)


def report_unmatched(
  dataset_name: str, root: pathlib.Path, files: Sequence[str], scheme: str
) -> dict[str, Any]:
  """Logs a warning naming the first few files not named the vendor's way; returns metadata."""
  if files:
    logging.warning(
      "%s: %d file(s) under %s do not match the naming scheme %s and were not used%s",
      dataset_name,
      len(files),
      root,
      scheme,
      _listing(files),
    )
  return {"count": len(files), "first": list(files[:20])}


def report_ignored(dataset_name: str, count: int, what: str) -> dict[str, Any]:
  """Logs (info) vendor files that this builder config leaves out by design."""
  if count:
    logging.info(
      "%s: left out %d %s (by design of this builder config).", dataset_name, count, what
    )
  return {"count": count, "what": what}


def report_incomplete(
  dataset_name: str, missing: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
  """Warns about subjects with an incomplete set of images, naming each and what is missing.

  ``missing`` maps a subject to human-readable descriptions of what it lacks. One warning names
  the first few subjects; the whole mapping is returned for the dataset info metadata.
  """
  missing = {s: list(m) for s, m in sorted(missing.items()) if m}
  if missing:
    described = [f"{s} (missing {'; '.join(m)})" for s, m in missing.items()]
    logging.warning(
      "%s: %d subject(s) have an incomplete set of images (they are still used): %s%s",
      dataset_name,
      len(missing),
      ", ".join(described[:NUM_NAMED_IN_LOGS]),
      ""
      if len(described) <= NUM_NAMED_IN_LOGS
      else f", and {len(described) - NUM_NAMED_IN_LOGS} more (all listed in the dataset info "
      "metadata 'incomplete_subjects')",
    )
  return missing


def check_split_subjects(
  dataset_name: str, train: Sequence[str], test: Sequence[str], rule: str
) -> None:
  """Raises :class:`NotEnoughSubjectsError` if either split would be empty."""
  if not train or not test:
    raise NotEnoughSubjectsError(
      f"{dataset_name}: {len(train) + len(test)} subject(s) found; the test split is {rule}, "
      f"which leaves {len(train)} subject(s) for training and {len(test)} for testing. Both "
      "must be non-empty: check that the manual dir holds the whole database."
    )


def group_ranges(values: Iterable[int], fmt: str = "{:02d}") -> str:
  """[1, 2, 3, 7] -> '01-03, 07' (for compact 'what is missing' messages)."""
  vals = sorted(set(values))
  parts = []
  i = 0
  while i < len(vals):
    j = i
    while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
      j += 1
    parts.append(fmt.format(vals[i]) if i == j else f"{fmt.format(vals[i])}-{fmt.format(vals[j])}")
    i = j + 1
  return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Bad-image policy


class ImageReader:
  """Reads the user's images under the bad-image policy.

  ``read(path, file_name)`` returns the preprocessed uint8 array, or ``None`` for a bad image
  when ``skip_bad_images`` is on (the file then goes to ``metadata['skipped_images']``, with
  ``extra`` such as the line of a labels file). Without it, a bad image raises ``error_class``
  (a :class:`BadImageError`) naming the path and ``where`` it was listed. Exceptions of the
  kinds in ``passthrough`` (a preprocessing that refuses its options) are not bad images.
  """

  def __init__(
    self,
    dataset_name: str,
    preprocess: Callable[[Image.Image], np.ndarray],
    *,
    skip_bad_images: bool,
    metadata: MutableMapping[str, Any],
    error_class: type[BadImageError] = BadImageError,
    how_to_skip: str = "build with skip_bad_images=True",
    passthrough: tuple[type[Exception], ...] = (),
  ):
    self.dataset_name = dataset_name
    self.preprocess = preprocess
    self.skip_bad_images = skip_bad_images
    self.metadata = metadata
    self.error_class = error_class
    self.how_to_skip = how_to_skip
    self.passthrough = passthrough
    metadata["skip_bad_images"] = bool(skip_bad_images)
    metadata.setdefault("skipped_images", [])

  def read(
    self,
    path: pathlib.Path,
    file_name: str,
    where: str = "",
    extra: Mapping[str, Any] | None = None,
  ) -> np.ndarray | None:
    try:
      with Image.open(path) as img:
        img.load()  # decodes everything: a truncated file fails here, not later
        return self.preprocess(img)
    except self.passthrough:
      raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
      reason = f"{e.__class__.__name__}: {_first_line(str(e))}"
      at = f"{where}: " if where else ""
      if not self.skip_bad_images:
        raise self.error_class(
          f"{self.dataset_name}: {at}cannot use the image {path} ({reason}). Replace or "
          f"remove the file{' (and its row)' if where else ''}, or {self.how_to_skip} to "
          "skip unreadable images (they are then listed in the dataset info metadata "
          "'skipped_images')."
        ) from None
      logging.warning(
        "%s: skipped the unreadable image %s (%s%s)",
        self.dataset_name,
        path,
        reason,
        f"; {where}" if where else "",
      )
      self.metadata["skipped_images"].append(
        {"file_name": file_name, **(extra or {}), "error": reason}
      )
      return None


# --------------------------------------------------------------------------------------------
# Geometry and encoding


def clamp_box(left: int, top: int, side: int, width: int, height: int) -> tuple[int, int, int, int]:
  """A ``side``×``side`` box at (left, top), shrunk/shifted to lie inside the image."""
  side = max(1, min(int(side), width, height))
  left = min(max(int(left), 0), width - side)
  top = min(max(int(top), 0), height - side)
  return (left, top, left + side, top + side)


def crop_resize(img: Image.Image, box: tuple[int, int, int, int], image_size: int) -> np.ndarray:
  """Crops ``box`` (left, top, right, bottom) and resizes it to image_size² (Lanczos).

  The crop is taken first, so pixels outside the box never leak in through the filter.
  Returns uint8 (image_size, image_size, 3) RGB.
  """
  if image_size < 1:
    raise ValueError(f"image_size must be positive, got {image_size}")
  rgb = img if img.mode == "RGB" else img.convert("RGB")
  out = rgb.crop(box).resize((image_size, image_size), RESAMPLE)
  return np.asarray(out, dtype=np.uint8)


def _first_line(text: str) -> str:
  return text.strip().splitlines()[0] if text.strip() else text


def _listing(names: Sequence[str]) -> str:
  if not names:
    return ""
  shown = ", ".join(names[:NUM_NAMED_IN_LOGS])
  more = len(names) - NUM_NAMED_IN_LOGS
  return f"; first: {shown}" + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------------------------
# Builder bases


class ManualDirBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder of images from the user's folder, written as ``array_record`` by default.

  ``skip_bad_images=True`` skips unreadable images (listed in
  ``info.metadata['skipped_images']``) instead of stopping the build.
  """

  def __init__(self, *, skip_bad_images: bool = False, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self.skip_bad_images = bool(skip_bad_images)
    self._original_state["skip_bad_images"] = self.skip_bad_images


class VendorBuilder(ManualDirBuilder, skip_registration=True):
  """The build of a licensed face database from the vendor's folder, in order:

  1. :meth:`scan` the manual dir into records (each with ``subject`` and ``file_name``,
     relative to the manual dir) and the files not named the vendor's way (``unmatched``); no
     record at all is an error that repeats the instructions and names what was left out;
  2. report in ``info.metadata``: ``unmatched_files``, ``left_out`` (:meth:`left_out`),
     ``incomplete_subjects`` (:meth:`find_incomplete`);
  3. split the subjects (:meth:`split_subjects`, by ``TEST_SPLIT_RULE``) and name the identity
     classes after them;
  4. read every image under the bad-image policy (:meth:`preprocess`) and write the
     :meth:`examples` of each.
  """

  DATASET: str  # the name in messages
  SCHEME: str  # how the vendor names the files, for messages
  TEST_SPLIT_RULE: str

  @abc.abstractmethod
  def scan(self, root: pathlib.Path) -> Any:
    """The manual dir's records (``.records``) and unmatched files (``.unmatched``)."""

  def scheme(self) -> str:
    """The file scheme this config reads, for the no-matching-files error."""
    return self.SCHEME

  @abc.abstractmethod
  def left_out(self, found) -> dict[str, Any]:
    """The ``left_out`` metadata: what the config leaves out by design (:func:`report_ignored`)."""

  @abc.abstractmethod
  def left_out_phrase(self, found) -> str:
    """What was left out by design, in words, for the no-matching-files error."""

  @abc.abstractmethod
  def find_incomplete(self, records) -> dict[str, list[str]]:
    """Per subject, what the subject lacks."""

  @abc.abstractmethod
  def split_subjects(self, subjects: list[str]) -> tuple[list[str], list[str]]:
    """(train, test) subjects, by ``TEST_SPLIT_RULE``."""

  @abc.abstractmethod
  def preprocess(self, img: Image.Image) -> np.ndarray:
    """The stored image (uint8 RGB at the config's size) of one vendor image."""

  @abc.abstractmethod
  def examples(
    self, record, image: np.ndarray, train: bool
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (key, example) pairs of one image (with ``image`` as :func:`features.pixels`)."""

  def _split_generators(self, dl_manager):
    name = self.DATASET
    root = resolve_manual_dir(dl_manager, name, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    found = self.scan(root)
    if not found.records:
      raise no_matching_files_error(
        name,
        root,
        found.unmatched,
        self.scheme(),
        self.MANUAL_DOWNLOAD_INSTRUCTIONS,
        left_out=self.left_out_phrase(found),
      )
    meta = self.info.metadata
    meta["unmatched_files"] = report_unmatched(name, root, found.unmatched, self.SCHEME)
    meta["left_out"] = self.left_out(found)
    meta["incomplete_subjects"] = report_incomplete(name, self.find_incomplete(found.records))

    subjects = sorted({r.subject for r in found.records})
    train, test = self.split_subjects(subjects)
    check_split_subjects(name, train, test, self.TEST_SPLIT_RULE)
    meta["test_subjects"] = test
    meta["test_split_rule"] = self.TEST_SPLIT_RULE
    identity = self.info.features["identity"]
    if identity.num_classes is None:
      identity.names = subjects
    self._reader = ImageReader(
      name, self.preprocess, skip_bad_images=self.skip_bad_images, metadata=meta
    )
    test_set = set(test)
    return {
      "train": self._generate_examples(
        root, [r for r in found.records if r.subject not in test_set], train=True
      ),
      "test": self._generate_examples(
        root, [r for r in found.records if r.subject in test_set], train=False
      ),
    }

  def _generate_examples(self, root: pathlib.Path, records, train: bool):
    for r in records:
      image = self._reader.read(root / r.file_name, r.file_name)
      if image is not None:
        yield from self.examples(r, image, train)

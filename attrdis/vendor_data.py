"""Shared parts of the TFDS builders of the licensed face databases (MultiPIE, BU-3DFE, RaFD).

The builders in ``datasets/{multipie,bu3dfe,rafd}`` read the vendor's own folder (the TFDS
*manual dir*) and use this module for what they have in common:

* finding the manual dir, with an error that repeats the download instructions and the expected
  layout when it is missing, empty or holds no file named the vendor's way
  (:func:`resolve_manual_dir`, :func:`no_matching_files_error`);
* walking the folder (:func:`walk_files`) and saying which files were not used and why
  (:func:`report_unmatched`, :func:`report_ignored`, :func:`report_incomplete`);
* the bad-image policy (:class:`ImageReader`): an unreadable or truncated image stops the
  build with its path, unless the builder was made with ``skip_bad_images=True``, in which case
  it is skipped, logged and listed in the dataset info metadata under ``skipped_images``;
* crop + resize helpers (:func:`crop_resize`, :func:`clamp_box`) and PNG encoding.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Mapping, MutableMapping, Sequence

from absl import logging
import numpy as np
from PIL import Image

# How many file names / subjects a log line names before it says "and N more".
NUM_NAMED_IN_LOGS = 5

RESAMPLE = Image.Resampling.LANCZOS


class MissingManualDataError(FileNotFoundError):
  """The manual dir is missing, empty, or holds no file named the way the vendor names them."""


class BadImageError(ValueError):
  """An image file could not be read or preprocessed (and ``skip_bad_images`` is off)."""


class NotEnoughSubjectsError(ValueError):
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
    what = (f"the manual dir {m.group(1)} does not exist or is empty" if m else
            f"no usable manual dir ({_first_line(str(e))})")
    raise MissingManualDataError(f"{dataset_name}: {what}.\n\n{instructions.strip()}") from e
  if not path.is_dir():
    raise MissingManualDataError(
        f"{dataset_name}: the manual dir {path} is not a folder.\n\n{instructions.strip()}")
  return path


def no_matching_files_error(dataset_name: str, root: pathlib.Path, files: Sequence[str],
                            scheme: str, instructions: str,
                            left_out: str = "") -> MissingManualDataError:
  """The error for a manual dir that holds files, none of them usable by the config.

  ``files``: the files not named the vendor's way; ``left_out``: what the config left out on
  purpose (e.g. "12 images of expressions not in this config"), if anything.
  """
  return MissingManualDataError(
      f"{dataset_name}: no file under {root} is named like {scheme} "
      f"({len(files)} other file(s) found{_listing(files)}"
      f"{'; left out by this config: ' + left_out if left_out else ''}). Give the folder "
      f"described below.\n\n{instructions.strip()}")


def walk_files(root: pathlib.Path,
               keep_dir: Callable[[str, str], bool] | None = None) -> tuple[list[str], int]:
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


def report_unmatched(dataset_name: str, root: pathlib.Path, files: Sequence[str],
                     scheme: str) -> dict[str, Any]:
  """Logs a warning naming the first few files not named the vendor's way; returns metadata."""
  if files:
    logging.warning(
        "%s: %d file(s) under %s do not match the naming scheme %s and were not used%s",
        dataset_name, len(files), root, scheme, _listing(files))
  return {"count": len(files), "first": list(files[:20])}


def report_ignored(dataset_name: str, count: int, what: str) -> dict[str, Any]:
  """Logs (info) vendor files that this builder config leaves out by design."""
  if count:
    logging.info("%s: left out %d %s (by design of this builder config).", dataset_name, count,
                 what)
  return {"count": count, "what": what}


def report_incomplete(dataset_name: str,
                      missing: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
  """Warns about subjects with an incomplete set of images, naming each and what is missing.

  ``missing`` maps a subject to human-readable descriptions of what it lacks. One warning names
  the first few subjects; the whole mapping is returned for the dataset info metadata.
  """
  missing = {s: list(m) for s, m in sorted(missing.items()) if m}
  if missing:
    described = [f"{s} (missing {'; '.join(m)})" for s, m in missing.items()]
    logging.warning(
        "%s: %d subject(s) have an incomplete set of images (they are still used): %s%s",
        dataset_name, len(missing), ", ".join(described[:NUM_NAMED_IN_LOGS]),
        "" if len(described) <= NUM_NAMED_IN_LOGS else
        f", and {len(described) - NUM_NAMED_IN_LOGS} more (all listed in the dataset info "
        "metadata 'incomplete_subjects')")
  return missing


def check_split_subjects(dataset_name: str, train: Sequence[str], test: Sequence[str],
                         rule: str) -> None:
  """Raises :class:`NotEnoughSubjectsError` if either split would be empty."""
  if not train or not test:
    raise NotEnoughSubjectsError(
        f"{dataset_name}: {len(train) + len(test)} subject(s) found; the test split is {rule}, "
        f"which leaves {len(train)} subject(s) for training and {len(test)} for testing. Both "
        "must be non-empty: check that the manual dir holds the whole database.")


def group_ranges(values: Iterable[int], fmt: str = "{:02d}") -> str:
  """[1, 2, 3, 7] -> '01-03, 07' (for compact 'what is missing' messages)."""
  vals = sorted(set(values))
  parts = []
  i = 0
  while i < len(vals):
    j = i
    while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
      j += 1
    parts.append(fmt.format(vals[i]) if i == j else
                 f"{fmt.format(vals[i])}-{fmt.format(vals[j])}")
    i = j + 1
  return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Bad-image policy


class ImageReader:
  """Reads vendor images under the bad-image policy.

  ``read(path, file_name)`` returns the preprocessed uint8 array, or ``None`` for a bad image
  when ``skip_bad_images`` is on (the file then goes to ``metadata['skipped_images']``).
  Without it, a bad image raises :class:`BadImageError` naming the path.
  """

  def __init__(self, dataset_name: str, preprocess: Callable[[Image.Image], np.ndarray], *,
               skip_bad_images: bool, metadata: MutableMapping[str, Any]):
    self.dataset_name = dataset_name
    self.preprocess = preprocess
    self.skip_bad_images = skip_bad_images
    self.metadata = metadata
    metadata["skip_bad_images"] = bool(skip_bad_images)
    metadata.setdefault("skipped_images", [])

  def read(self, path: pathlib.Path, file_name: str) -> np.ndarray | None:
    try:
      with Image.open(path) as img:
        img.load()  # decodes everything: a truncated file fails here, not later
        return self.preprocess(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
      reason = f"{e.__class__.__name__}: {e}"
      if not self.skip_bad_images:
        raise BadImageError(
            f"{self.dataset_name}: cannot use the image {path} ({reason}). Replace or remove "
            "the file, or build with skip_bad_images=True to skip unreadable images (they are "
            "then listed in the dataset info metadata 'skipped_images').") from e
      logging.warning("%s: skipped the unreadable image %s (%s)", self.dataset_name, path,
                      reason)
      self.metadata["skipped_images"].append({"file_name": file_name, "error": reason})
      return None


# --------------------------------------------------------------------------------------------
# Geometry and encoding


def clamp_box(left: int, top: int, side: int, width: int, height: int
             ) -> tuple[int, int, int, int]:
  """A ``side``×``side`` box at (left, top), shrunk/shifted to lie inside the image."""
  side = max(1, min(int(side), width, height))
  left = min(max(int(left), 0), width - side)
  top = min(max(int(top), 0), height - side)
  return (left, top, left + side, top + side)


def crop_resize(img: Image.Image, box: tuple[int, int, int, int], image_size: int
               ) -> np.ndarray:
  """Crops ``box`` (left, top, right, bottom) and resizes it to image_size² (Lanczos).

  The crop is taken first, so pixels outside the box never leak in through the filter.
  Returns uint8 (image_size, image_size, 3) RGB.
  """
  if image_size < 1:
    raise ValueError(f"image_size must be positive, got {image_size}")
  rgb = img if img.mode == "RGB" else img.convert("RGB")
  out = rgb.crop(box).resize((image_size, image_size), RESAMPLE)
  return np.asarray(out, dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
  """uint8 (H, W, 3) → PNG bytes (what the builders give TFDS: no TensorFlow needed)."""
  buf = io.BytesIO()
  array = np.ascontiguousarray(image, dtype=np.uint8)
  if array.ndim != 3 or array.shape[2] != 3:
    raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _first_line(text: str) -> str:
  return text.strip().splitlines()[0] if text.strip() else text


def _listing(names: Sequence[str]) -> str:
  if not names:
    return ""
  shown = ", ".join(names[:NUM_NAMED_IN_LOGS])
  more = len(names) - NUM_NAMED_IN_LOGS
  return f"; first: {shown}" + (f" and {more} more" if more > 0 else "")

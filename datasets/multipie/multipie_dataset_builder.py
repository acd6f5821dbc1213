"""MultiPIE (CMU Multi-PIE), forward-facing camera 05_1, from the vendor's own folder.

Labels: ``identity`` (the subjects found, by subject number), ``expression`` (from the
(session, recording) pair, see ``EXPRESSION_OF_RECORDING``), ``illumination`` (the flash,
00-19). Test split: the first 10 subjects in sorted order. Images: the top square crop of
220×220 px of the 640×480 frame, horizontally centred, resized to ``image_size``.

Build: ``tfds build datasets/multipie --manual_dir=/path/to/Multi-Pie/data
[--config=paper_64]`` or ``Builder(config=..., data_dir=..., file_format="array_record")`` then
``download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))``.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from attrdis_datasets import features as features_lib
from attrdis_datasets import vendor

DATASET = "multipie"
CAMERA = "05_1"
# (session, recording) -> expression, as the vendor recorded them.
EXPRESSION_OF_RECORDING = {
  (1, 1): "neutral",
  (1, 2): "smile",
  (2, 1): "neutral",
  (2, 2): "surprise",
  (2, 3): "squint",
  (3, 1): "neutral",
  (3, 2): "smile",
  (3, 3): "disgust",
  (4, 1): "neutral",
  (4, 2): "neutral",
  (4, 3): "scream",
}
PAPER_EXPRESSIONS = ("neutral", "scream", "squint", "surprise")
ALL_EXPRESSIONS = tuple(sorted(set(EXPRESSION_OF_RECORDING.values())))
ILLUMINATIONS = tuple(f"{i:02d}" for i in range(20))
NUM_TEST_SUBJECTS = 10
TEST_SPLIT_RULE = (
  f"the first {NUM_TEST_SUBJECTS} subjects in sorted order of subject "
  "number form the test split; all others train"
)
# The paper's crop: the top 220×220 square of the 640×480 frame, horizontally centred.
VENDOR_WIDTH, VENDOR_HEIGHT, VENDOR_CROP = 640, 480, 220
SCHEME = "session0S/multiview/SSS/RR/05_1/SSS_0S_RR_051_II.png"

_FILE_RE = re.compile(
  r"(?:.*/)?session0(?P<session>\d)/multiview/(?P<subject>\d{3})/(?P<recording>\d{2})/05_1/"
  r"(?P=subject)_0(?P=session)_(?P=recording)_051_(?P<illumination>\d{2})\.(?i:png)"
)
_RECORDING_DIR_RE = re.compile(r"(?:.*/)?multiview/\d{3}/\d{2}")

_INSTRUCTIONS = f"""\
MultiPIE is licensed by Carnegie Mellon University; request it from CMU through the Multi-PIE
page (https://www.cs.cmu.edu/afs/cs/project/PIE/MultiPie/Multi-Pie/Home.html), which has the
licence agreement. Give as the manual dir the folder that holds session01 ... session04 (the
`data` folder of the distribution; a folder above it works too). Only the forward-facing camera
05_1 is read; the other cameras' folders are not even listed. Layout expected:

  <manual_dir>/session01/multiview/001/01/05_1/001_01_01_051_00.png
  <manual_dir>/{SCHEME}
      S = session 1-4, SSS = subject number, RR = recording number, II = illumination 00-19

Then: tfds build datasets/multipie --manual_dir=/data/Multi-Pie/data --config=paper
(the tfds 4.9.10 command imports apache_beam and mlcroissant at start-up: install
apache-beam and mlcroissant for it), or train with
run_train.py and config.dataset.manual_dir=/data/Multi-Pie/data (prepared on first use).
"""

_CITATION = """\
@article{gross2010multipie,
  title={Multi-PIE},
  author={Gross, Ralph and Matthews, Iain and Cohn, Jeffrey and Kanade, Takeo and Baker, Simon},
  journal={Image and Vision Computing},
  volume={28}, number={5}, pages={807--813}, year={2010}
}"""


@dataclasses.dataclass
class MultiPieConfig(tfds.core.BuilderConfig):
  """image_size: side of the stored images; expressions: the expression classes kept."""

  image_size: int = 128
  expressions: tuple[str, ...] = PAPER_EXPRESSIONS


class Record(NamedTuple):
  file_name: str  # relative to the manual dir
  subject: str
  session: int
  recording: int
  illumination: int
  expression: str


@dataclasses.dataclass
class Scan:
  records: list[Record]  # the config's images, sorted by file name
  unmatched: list[str]  # files not named the vendor's way (or inconsistent names)
  other_expressions: int  # vendor images of expressions this config leaves out
  other_cameras: int  # camera folders other than 05_1 (pruned, not listed)
  num_files: int


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
  """The paper's crop for a width×height image: (left, top, right, bottom).

  At the vendor's 640×480 this is the top 220×220 square, horizontally centred:
  (210, 0, 430, 220). Other sizes keep the same fractions (side = 220/640 of the width,
  = 220/480 of the height; the smaller of the two if the aspect ratio differs).
  """
  side = round(min(width * VENDOR_CROP / VENDOR_WIDTH, height * VENDOR_CROP / VENDOR_HEIGHT))
  return vendor.clamp_box((width - side) // 2, 0, side, width, height)


def preprocess_image(img: Image.Image, image_size: int) -> np.ndarray:
  """MultiPIE's preprocessing: crop_box (top centred square), Lanczos resize, RGB uint8."""
  return vendor.crop_resize(img, crop_box(*img.size), image_size)


def scan(root: pathlib.Path, expressions: tuple[str, ...]) -> Scan:
  """Lists the manual dir: the images of ``expressions`` and what was not used, and why."""

  def keep_dir(parent: str, name: str) -> bool:
    return name == CAMERA if _RECORDING_DIR_RE.fullmatch(parent) else True

  files, other_cameras = vendor.walk_files(root, keep_dir)
  records, unmatched, other = [], [], 0
  seen: dict[tuple[str, int, int, int], str] = {}
  for f in files:
    m = _FILE_RE.fullmatch(f)
    if not m:
      unmatched.append(f)
      continue
    subject, session = m["subject"], int(m["session"])
    recording, illumination = int(m["recording"]), int(m["illumination"])
    expression = EXPRESSION_OF_RECORDING.get((session, recording))
    if expression is None or illumination >= len(ILLUMINATIONS):
      unmatched.append(f)  # a (session, recording) or flash that MultiPIE does not have
      continue
    if expression not in expressions:
      other += 1
      continue
    key = (subject, session, recording, illumination)
    if key in seen:
      unmatched.append(f)  # a second copy of the same image (e.g. two copies of the data)
      continue
    seen[key] = f
    records.append(Record(f, subject, session, recording, illumination, expression))
  return Scan(records, unmatched, other, other_cameras, len(files))


def find_incomplete(records: list[Record], expressions: tuple[str, ...]) -> dict[str, list[str]]:
  """What each subject lacks among the config's (session, recording) pairs and illuminations.

  Illuminations are checked against those found anywhere in the data (all 20 for the vendor's
  data), so a subject missing some flashes of a recording is reported.
  """
  expected = sorted(p for p, e in EXPRESSION_OF_RECORDING.items() if e in expressions)
  illuminations = {r.illumination for r in records}
  have: dict[str, dict[tuple[int, int], set[int]]] = collections.defaultdict(
    lambda: collections.defaultdict(set)
  )
  for r in records:
    have[r.subject][(r.session, r.recording)].add(r.illumination)
  missing: dict[str, list[str]] = {}
  for subject, pairs in have.items():
    lacks = []
    for session in sorted({s for s, _ in expected}):
      in_session = [p for p in expected if p[0] == session]
      if not any(p in pairs for p in in_session):
        lacks.append(f"session {session}")
        continue
      for p in in_session:
        if p not in pairs:
          lacks.append(f"session {session} recording {p[1]:02d}")
        elif illuminations - pairs[p]:
          lacks.append(
            f"session {session} recording {p[1]:02d} illuminations "
            f"{vendor.group_ranges(illuminations - pairs[p])}"
          )
    if lacks:
      missing[subject] = lacks
  return missing


class Builder(vendor.VendorBuilder):
  """MultiPIE, frontal camera; labels identity, expression, illumination.

  ``skip_bad_images=True`` skips unreadable images (listed in
  ``info.metadata['skipped_images']``) instead of stopping the build.
  """

  name = "multipie"
  DATASET = DATASET
  SCHEME = SCHEME
  TEST_SPLIT_RULE = TEST_SPLIT_RULE
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": features_lib.RAW_PIXELS_NOTE,
  }
  BUILDER_CONFIGS = [
    MultiPieConfig(
      name="paper",
      image_size=128,
      expressions=PAPER_EXPRESSIONS,
      description="The paper's subset: neutral, scream, squint, surprise; 128 px.",
    ),
    MultiPieConfig(
      name="paper_64",
      image_size=64,
      expressions=PAPER_EXPRESSIONS,
      description="The paper's subset at 64 px.",
    ),
    MultiPieConfig(
      name="all_expressions",
      image_size=128,
      expressions=ALL_EXPRESSIONS,
      description="All six expressions; 128 px.",
    ),
    MultiPieConfig(
      name="all_expressions_64",
      image_size=64,
      expressions=ALL_EXPRESSIONS,
      description="All six expressions at 64 px.",
    ),
  ]
  DEFAULT_CONFIG_NAME = "paper"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    unknown = set(config.expressions) - set(ALL_EXPRESSIONS)
    if unknown:
      raise ValueError(
        f"{DATASET} config {config.name!r}: unknown expressions {sorted(unknown)}; "
        f"MultiPIE has {', '.join(ALL_EXPRESSIONS)}."
      )
    size = config.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "MultiPIE, forward-facing camera 05_1. Labels: identity (the subjects found, "
        "named by subject number), expression (from the session and recording: "
        + ", ".join(f"({s},{r}) {e}" for (s, r), e in EXPRESSION_OF_RECORDING.items())
        + f"), illumination (flash 00-19). Test split: {TEST_SPLIT_RULE}. Images: the top "
        f"{VENDOR_CROP}x{VENDOR_CROP} square of the {VENDOR_WIDTH}x{VENDOR_HEIGHT} frame, "
        f"horizontally centred (same fractions at other sizes), Lanczos-resized to {size}. "
        "file_name is the source file relative to the manual dir."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": features_lib.image(size),
          "identity": tfds.features.ClassLabel(),  # names: the subjects, set when built
          "expression": tfds.features.ClassLabel(names=list(config.expressions)),
          "illumination": tfds.features.ClassLabel(names=list(ILLUMINATIONS)),
          "session": tfds.features.Scalar(np.int32),
          "recording": tfds.features.Scalar(np.int32),
          "file_name": tfds.features.Text(),
        }
      ),
      homepage="https://www.cs.cmu.edu/afs/cs/project/PIE/MultiPie/Multi-Pie/Home.html",
      citation=_CITATION,
      metadata=tfds.core.MetadataDict(),
    )

  def scan(self, root: pathlib.Path) -> Scan:
    return scan(root, tuple(self.builder_config.expressions))

  def scheme(self) -> str:
    return f"{SCHEME} (expressions {', '.join(self.builder_config.expressions)})"

  def left_out_phrase(self, found: Scan) -> str:
    return (
      f"{found.other_expressions} image(s) of other expressions, "
      f"{found.other_cameras} folder(s) of other cameras"
    )

  def left_out(self, found: Scan) -> dict[str, Any]:
    return {
      "other_expressions": vendor.report_ignored(
        DATASET, found.other_expressions, "images of expressions not in this config"
      ),
      "other_camera_folders": vendor.report_ignored(
        DATASET, found.other_cameras, f"camera folders other than {CAMERA}"
      ),
    }

  def find_incomplete(self, records: list[Record]) -> dict[str, list[str]]:
    return find_incomplete(records, tuple(self.builder_config.expressions))

  def split_subjects(self, subjects: list[str]) -> tuple[list[str], list[str]]:
    return subjects[NUM_TEST_SUBJECTS:], subjects[:NUM_TEST_SUBJECTS]

  def preprocess(self, img: Image.Image) -> np.ndarray:
    return preprocess_image(img, self.builder_config.image_size)

  def examples(self, r: Record, image: np.ndarray, train: bool):
    yield (
      r.file_name,
      {
        "image": features_lib.pixels(image),
        "identity": r.subject,
        "expression": r.expression,
        "illumination": r.illumination,
        "session": r.session,
        "recording": r.recording,
        "file_name": r.file_name,
      },
    )

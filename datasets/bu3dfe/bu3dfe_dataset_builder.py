"""BU-3DFE (Binghamton University 3D Facial Expression), the 2D frontal textures.

Labels: ``identity`` (the subjects found, e.g. F0001), ``expression`` (7 classes); metadata:
``intensity`` (0 for neutral, 1-4), ``race`` (the two-letter code of the file name), ``sex``.
Test split: 10 subjects drawn by ``numpy.random.default_rng(0).permutation`` of the sorted
subject ids (recorded in ``info.metadata['test_subjects']``). Images: a 2 px border shaved off,
then resized to ``image_size``.

Build: ``tfds build datasets/bu3dfe --manual_dir=/path/to/BU-3DFE [--config=default_64]``.
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

DATASET = "bu3dfe"
EXPRESSION_OF_CODE = {
  "AN": "anger",
  "DI": "disgust",
  "FE": "fear",
  "HA": "happiness",
  "NE": "neutral",
  "SA": "sadness",
  "SU": "surprise",
}
EXPRESSIONS = tuple(EXPRESSION_OF_CODE[c] for c in sorted(EXPRESSION_OF_CODE))
INTENSITIES = (1, 2, 3, 4)  # neutral has the single intensity 00
SEXES = ("female", "male")
NUM_TEST_SUBJECTS = 10
TEST_SPLIT_SEED = 0
TEST_SPLIT_RULE = (
  f"the first {NUM_TEST_SUBJECTS} subjects of "
  f"numpy.random.default_rng({TEST_SPLIT_SEED}).permutation(sorted subject ids) "
  "form the test split; all others train"
)
SHAVE = 2  # px, on every side, at any resolution (the vendor's images are 512×512)
SCHEME = "SUBJECT/SUBJECT_EEIIRR_F2D.bmp (e.g. F0001/F0001_AN01WH_F2D.bmp)"

_FILE_RE = re.compile(
  r"(?P<subject>[FM]\d{4})_(?P<code>[A-Z]{2})(?P<intensity>\d{2})"
  r"(?P<race>[A-Z]{2})_F2D\.(?i:bmp)"
)
# The distribution's other files (3D models, 3D textures, landmarks...): left out by design.
_OTHER_VENDOR_RE = re.compile(r"[FM]\d{4}_[A-Z]{2}\d{2}[A-Z]{2}_\w+\.\w+")
_SUBJECT_DIR_RE = re.compile(r"[FM]\d{4}")

_INSTRUCTIONS = f"""\
BU-3DFE is licensed by Binghamton University (State University of New York); request it from
Prof. Lijun Yin's group through the BU-3DFE page
(https://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html), which has the licence
agreement. Give as the manual dir the folder that holds the 100 subject folders F0001 ... F0056,
M0001 ... M0044. Only the 2D frontal textures (*_F2D.bmp) are read; the 3D models and other
files are left out. Layout expected:

  <manual_dir>/F0001/F0001_AN01WH_F2D.bmp
  <manual_dir>/{SCHEME.split(' ')[0]}
      SUBJECT = F0001..M0044, EE = expression AN DI FE HA NE SA SU, II = intensity 01-04
      (00 for NE), RR = race code

Then: tfds build datasets/bu3dfe --manual_dir=/data/BU-3DFE --config=default
(the tfds 4.9.10 command imports apache_beam and mlcroissant at start-up: install
apache-beam and mlcroissant for it), or train with
run_train.py and config.dataset.manual_dir=/data/BU-3DFE (prepared on first use).
"""

_CITATION = """\
@inproceedings{yin2006bu3dfe,
  title={A 3D facial expression database for facial behavior research},
  author={Yin, Lijun and Wei, Xiaozhou and Sun, Yi and Wang, Jun and Rosato, Matthew J.},
  booktitle={7th International Conference on Automatic Face and Gesture Recognition (FGR06)},
  pages={211--216}, year={2006}
}"""


@dataclasses.dataclass
class Bu3dfeConfig(tfds.core.BuilderConfig):
  """image_size: side of the stored images."""

  image_size: int = 128


class Record(NamedTuple):
  file_name: str
  subject: str
  code: str  # AN, DI, ...
  intensity: int
  race: str


@dataclasses.dataclass
class Scan:
  records: list[Record]
  unmatched: list[str]
  other_vendor_files: int
  num_files: int


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
  """A 2-px shave on every side; a non-square frame then keeps its centred square.

  At the vendor's 512×512: (2, 2, 510, 510).
  """
  if width <= 2 * SHAVE or height <= 2 * SHAVE:
    raise ValueError(f"image of {width}x{height} px is too small for a {SHAVE}-px shave")
  w, h = width - 2 * SHAVE, height - 2 * SHAVE
  side = min(w, h)
  return vendor.clamp_box(SHAVE + (w - side) // 2, SHAVE + (h - side) // 2, side, width, height)


def preprocess_image(img: Image.Image, image_size: int) -> np.ndarray:
  """BU-3DFE's preprocessing: crop_box (2-px shave), Lanczos resize, RGB uint8."""
  return vendor.crop_resize(img, crop_box(*img.size), image_size)


def scan(root: pathlib.Path) -> Scan:
  """Lists the manual dir: the 2D frontal textures and what was not used."""
  files, _ = vendor.walk_files(root)
  records, unmatched, other = [], [], 0
  seen: set[tuple[str, str, int]] = set()
  for f in files:
    parent, _, base = f.rpartition("/")
    m = _FILE_RE.fullmatch(base)
    if not m:
      if _OTHER_VENDOR_RE.fullmatch(base):
        other += 1
      else:
        unmatched.append(f)
      continue
    subject, code, intensity = m["subject"], m["code"], int(m["intensity"])
    folder = parent.rpartition("/")[2]
    ok = (
      code in EXPRESSION_OF_CODE
      and (intensity == 0 if code == "NE" else intensity in INTENSITIES)
      and (not _SUBJECT_DIR_RE.fullmatch(folder) or folder == subject)
      and (subject, code, intensity) not in seen
    )
    if not ok:  # unknown code, impossible intensity, wrong subject folder or a second copy
      unmatched.append(f)
      continue
    seen.add((subject, code, intensity))
    records.append(Record(f, subject, code, intensity, m["race"]))
  return Scan(records, unmatched, other, len(files))


def find_incomplete(records: list[Record]) -> dict[str, list[str]]:
  """Per subject, the (expression, intensity) images missing out of the vendor's 25."""
  expected = {("NE", 0)} | {(c, i) for c in EXPRESSION_OF_CODE if c != "NE" for i in INTENSITIES}
  have: dict[str, set[tuple[str, int]]] = collections.defaultdict(set)
  for r in records:
    have[r.subject].add((r.code, r.intensity))
  missing = {}
  for subject, got in have.items():
    items = []
    for code in sorted(EXPRESSION_OF_CODE):
      gone = sorted(i for c, i in expected - got if c == code)
      if len(gone) == len(INTENSITIES):  # a whole expression
        items.append(f"{code}{gone[0]:02d}-{code}{gone[-1]:02d}")
      else:
        items += [f"{code}{i:02d}" for i in gone]
    if items:
      missing[subject] = [", ".join(items)]
  return missing


def split_subjects(subjects: list[str]) -> tuple[list[str], list[str]]:
  """(train, test) subjects by the seeded permutation of the sorted ids."""
  subjects = sorted(subjects)
  order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(subjects))
  test = sorted(subjects[i] for i in order[:NUM_TEST_SUBJECTS])
  return [s for s in subjects if s not in test], test


class Builder(vendor.VendorBuilder):
  """BU-3DFE 2D frontal textures; labels identity and expression.

  ``skip_bad_images=True`` skips unreadable images (listed in
  ``info.metadata['skipped_images']``) instead of stopping the build.
  """

  name = "bu3dfe"
  DATASET = DATASET
  SCHEME = SCHEME
  TEST_SPLIT_RULE = TEST_SPLIT_RULE
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": features_lib.RAW_PIXELS_NOTE,
  }
  BUILDER_CONFIGS = [
    Bu3dfeConfig(name="default", image_size=128, description="All 2D frontal textures; 128 px."),
    Bu3dfeConfig(name="default_64", image_size=64, description="All 2D frontal textures; 64 px."),
  ]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "BU-3DFE 2D frontal textures (*_F2D.bmp). Labels: identity (the subjects found, "
        "named by subject id), expression ("
        + ", ".join(f"{c} {e}" for c, e in sorted(EXPRESSION_OF_CODE.items()))
        + "). Metadata: "
        "intensity (0 for neutral, 1-4), race (the file name's two-letter code), sex (F/M "
        f"of the subject id). Test split: {TEST_SPLIT_RULE} (the ids are listed in the "
        f"metadata 'test_subjects'). Images: a {SHAVE}-px border shaved off (then the "
        f"centred square of a non-square frame), Lanczos-resized to {size}. file_name is "
        "the source file relative to the manual dir."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": features_lib.image(size),
          "identity": tfds.features.ClassLabel(),  # names: the subjects, set when built
          "expression": tfds.features.ClassLabel(names=list(EXPRESSIONS)),
          "intensity": tfds.features.Scalar(np.int32),
          "race": tfds.features.Text(),
          "sex": tfds.features.ClassLabel(names=list(SEXES)),
          "file_name": tfds.features.Text(),
        }
      ),
      homepage="https://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html",
      citation=_CITATION,
      metadata=tfds.core.MetadataDict(),
    )

  def scan(self, root: pathlib.Path) -> Scan:
    return scan(root)

  def left_out_phrase(self, found: Scan) -> str:
    return f"{found.other_vendor_files} other BU-3DFE file(s) (3D models, ...)"

  def left_out(self, found: Scan) -> dict[str, Any]:
    return {
      "other_vendor_files": vendor.report_ignored(
        DATASET, found.other_vendor_files, "other BU-3DFE files (3D models, textures, ...)"
      )
    }

  def find_incomplete(self, records: list[Record]) -> dict[str, list[str]]:
    return find_incomplete(records)

  def split_subjects(self, subjects: list[str]) -> tuple[list[str], list[str]]:
    return split_subjects(subjects)

  def preprocess(self, img: Image.Image) -> np.ndarray:
    return preprocess_image(img, self.builder_config.image_size)

  def examples(self, r: Record, image: np.ndarray, train: bool):
    yield (
      r.file_name,
      {
        "image": features_lib.pixels(image),
        "identity": r.subject,
        "expression": EXPRESSION_OF_CODE[r.code],
        "intensity": r.intensity,
        "race": r.race,
        "sex": SEXES[r.subject.startswith("M")],
        "file_name": r.file_name,
      },
    )

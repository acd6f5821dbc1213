"""RaFD (Radboud Faces Database) from the vendor's own folder of JPEG files.

Labels: ``identity`` (the subjects found, e.g. 01), ``expression`` (8), ``gaze`` (frontal, left,
right), ``pose`` (the camera angles of the config: only 090 by default); metadata: ``gender``,
``ethnicity``, ``flipped``. Test subjects: 01 02 03 04 05 07 08 64. The training split also
holds every training image mirrored, with left and right gaze (and poses 000/180, 045/135)
swapped; ``flipped`` tells them apart and ``file_name`` names the source file of both.
Images: the paper's crop (640×640 centred, shifted 128 px up, on the vendor's 681×1024 frame;
the same fractions at other sizes, see ``crop_box``), resized to ``image_size``.

Build: ``tfds build datasets/rafd --manual_dir=/path/to/RaFD [--config=frontal_64]``.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
from typing import Any, NamedTuple

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from attrdis_datasets import features as features_lib
from attrdis_datasets import vendor

DATASET = "rafd"
POSES = ("000", "045", "090", "135", "180")
FRONTAL_POSES = ("090",)
MIRRORED_POSE = {"000": "180", "045": "135", "090": "090", "135": "045", "180": "000"}
EXPRESSIONS = (
  "angry",
  "contemptuous",
  "disgusted",
  "fearful",
  "happy",
  "neutral",
  "sad",
  "surprised",
)
GAZES = ("frontal", "left", "right")
MIRRORED_GAZE = {"frontal": "frontal", "left": "right", "right": "left"}
GENDERS = ("female", "male")
TEST_SUBJECTS = ("01", "02", "03", "04", "05", "07", "08", "64")
TEST_SPLIT_RULE = (
  "subjects " + " ".join(TEST_SUBJECTS) + " form the test split (the paper's); all others train"
)
# The paper's crop on the vendor's 681×1024 (width×height) frames: a 640×640 square, centred,
# then shifted 128 px up, i.e. the box (20, 64, 660, 704).
VENDOR_WIDTH, VENDOR_HEIGHT, VENDOR_CROP, VENDOR_SHIFT_UP = 681, 1024, 640, 128
SCHEME = (
  "RafdPPP_NN_Ethnicity_gender_expression_gaze.jpg "
  "(e.g. Rafd090_01_Caucasian_female_angry_frontal.jpg)"
)
FLIP_SUFFIX = "#flipped"  # key suffix of the mirrored training examples

_FILE_RE = re.compile(
  r"Rafd(?P<pose>\d{3})_(?P<subject>\d{2})_(?P<ethnicity>[A-Za-z]+)_"
  r"(?P<gender>female|male)_(?P<expression>[a-z]+)_(?P<gaze>[a-z]+)"
  r"\.(?i:jpe?g)"
)

_INSTRUCTIONS = f"""\
RaFD is distributed by the Behavioural Science Institute of Radboud University Nijmegen for
non-commercial research; register and accept the terms at https://rafd.socsci.ru.nl to download
it. Give as the manual dir the folder that holds the Rafd*.jpg files (subfolders are searched
too). Only the frontal camera (Rafd090_*) is used unless the config is all_poses. Layout
expected:

  <manual_dir>/Rafd090_01_Caucasian_female_angry_frontal.jpg
  <manual_dir>/{SCHEME.split(' ')[0]}
      PPP = camera angle 000 045 090 135 180, NN = subject number, expression = angry,
      contemptuous, disgusted, fearful, happy, neutral, sad or surprised, gaze = frontal, left
      or right

Then: tfds build datasets/rafd --manual_dir=/data/RaFD --config=frontal
(the tfds 4.9.10 command imports apache_beam and mlcroissant at start-up: install
apache-beam and mlcroissant for it), or train with
run_train.py and config.dataset.manual_dir=/data/RaFD (prepared on first use).
"""

_CITATION = """\
@article{langner2010rafd,
  title={Presentation and validation of the Radboud Faces Database},
  author={Langner, Oliver and Dotsch, Ron and Bijlstra, Gijsbert and Wigboldus, Daniel H. J.
          and Hawk, Skyler T. and van Knippenberg, Ad},
  journal={Cognition and Emotion},
  volume={24}, number={8}, pages={1377--1388}, year={2010}
}"""


@dataclasses.dataclass
class RafdConfig(tfds.core.BuilderConfig):
  """image_size: side of the stored images; poses: the camera angles kept (closed under
  mirroring, since mirrored training images change 045 to 135 and 000 to 180)."""

  image_size: int = 128
  poses: tuple[str, ...] = FRONTAL_POSES


class Record(NamedTuple):
  file_name: str
  subject: str
  pose: str
  ethnicity: str
  gender: str
  expression: str
  gaze: str


@dataclasses.dataclass
class Scan:
  records: list[Record]
  unmatched: list[str]
  other_poses: int
  num_files: int


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
  """The paper's crop for a width×height image: (left, top, right, bottom).

  On the vendor's 681×1024 frame: the 640×640 centre square moved 128 px up, (20, 64, 660, 704).
  At other sizes the same fractions: side = 640/681 of the width or 640/1024 of the height,
  whichever is smaller; horizontally centred; top = the centred top minus 128/1024 of the
  height; the box is then kept inside the frame.
  """
  side = round(min(width * VENDOR_CROP / VENDOR_WIDTH, height * VENDOR_CROP / VENDOR_HEIGHT))
  top = (height - side) // 2 - round(height * VENDOR_SHIFT_UP / VENDOR_HEIGHT)
  return vendor.clamp_box((width - side) // 2, top, side, width, height)


def preprocess_image(img: Image.Image, image_size: int) -> np.ndarray:
  """RaFD's preprocessing: crop_box (centre square shifted up), Lanczos resize, RGB uint8."""
  return vendor.crop_resize(img, crop_box(*img.size), image_size)


def scan(root: pathlib.Path, poses: tuple[str, ...]) -> Scan:
  """Lists the manual dir: the images of ``poses`` and what was not used."""
  files, _ = vendor.walk_files(root)
  records, unmatched, other = [], [], 0
  seen: set[tuple[str, str, str, str]] = set()
  for f in files:
    m = _FILE_RE.fullmatch(f.rpartition("/")[2])
    if (
      not m
      or m["pose"] not in POSES
      or m["expression"] not in EXPRESSIONS
      or m["gaze"] not in GAZES
    ):
      unmatched.append(f)
      continue
    if m["pose"] not in poses:
      other += 1
      continue
    key = (m["subject"], m["pose"], m["expression"], m["gaze"])
    if key in seen:
      unmatched.append(f)  # a second copy of the same image
      continue
    seen.add(key)
    records.append(
      Record(f, m["subject"], m["pose"], m["ethnicity"], m["gender"], m["expression"], m["gaze"])
    )
  return Scan(records, unmatched, other, len(files))


def find_incomplete(records: list[Record], poses: tuple[str, ...]) -> dict[str, list[str]]:
  """Per subject and pose, the (expression, gaze) images missing out of the vendor's 8×3."""
  have: dict[str, dict[str, set[tuple[str, str]]]] = collections.defaultdict(
    lambda: collections.defaultdict(set)
  )
  for r in records:
    have[r.subject][r.pose].add((r.expression, r.gaze))
  expected = {(e, g) for e in EXPRESSIONS for g in GAZES}
  missing: dict[str, list[str]] = {}
  for subject, by_pose in have.items():
    lacks = []
    for pose in poses:
      gone = expected - by_pose.get(pose, set())
      if gone == expected:
        lacks.append(f"pose {pose}")
      elif gone:  # an expression with all three gazes missing is named alone
        items = []
        for e in EXPRESSIONS:
          gazes = [g for g in GAZES if (e, g) in gone]
          items += [e] if len(gazes) == len(GAZES) else [f"{e}/{g}" for g in gazes]
        lacks.append(f"pose {pose}: " + ", ".join(items))
    if lacks:
      missing[subject] = lacks
  return missing


class Builder(vendor.VendorBuilder):
  """RaFD; labels identity, expression, gaze (and pose); mirrored training images.

  ``skip_bad_images=True`` skips unreadable images (listed in
  ``info.metadata['skipped_images']``) instead of stopping the build.
  """

  name = "rafd"
  DATASET = DATASET
  SCHEME = SCHEME
  TEST_SPLIT_RULE = TEST_SPLIT_RULE
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": features_lib.RAW_PIXELS_NOTE,
  }
  BUILDER_CONFIGS = [
    RafdConfig(
      name="frontal",
      image_size=128,
      poses=FRONTAL_POSES,
      description="The paper's setting: frontal camera (090) only; 128 px.",
    ),
    RafdConfig(
      name="frontal_64",
      image_size=64,
      poses=FRONTAL_POSES,
      description="Frontal camera only; 64 px.",
    ),
    RafdConfig(
      name="all_poses",
      image_size=128,
      poses=POSES,
      description="All five camera angles, pose as a label; 128 px.",
    ),
    RafdConfig(
      name="all_poses_64",
      image_size=64,
      poses=POSES,
      description="All five camera angles, pose as a label; 64 px.",
    ),
  ]
  DEFAULT_CONFIG_NAME = "frontal"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    poses = tuple(config.poses)
    if not poses or set(poses) - set(POSES) or {MIRRORED_POSE[p] for p in poses} != set(poses):
      raise ValueError(
        f"{DATASET} config {config.name!r}: poses {poses} must be a non-empty "
        f"subset of {POSES} that holds the mirror of each of its poses "
        f"({MIRRORED_POSE})."
      )
    size = config.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        f"RaFD, camera angles {', '.join(poses)}. Labels: identity (the subjects found, "
        f"named by subject number), expression ({', '.join(EXPRESSIONS)}), gaze "
        f"({', '.join(GAZES)}), pose ({', '.join(poses)}). Metadata: gender, ethnicity "
        f"(as in the file name), flipped. Test split: {TEST_SPLIT_RULE}. The training split "
        "also holds each training image mirrored left-right with the gaze left<->right and "
        "pose 000<->180, 045<->135 swapped (flipped=True, same file_name). Images: the "
        f"{VENDOR_CROP}x{VENDOR_CROP} centre square of the {VENDOR_WIDTH}x{VENDOR_HEIGHT} "
        f"frame shifted {VENDOR_SHIFT_UP} px up (the same fractions at other sizes), "
        f"Lanczos-resized to {size}. file_name is the source file relative to the manual "
        "dir."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": features_lib.image(size),
          "identity": tfds.features.ClassLabel(),  # names: the subjects, set when built
          "expression": tfds.features.ClassLabel(names=list(EXPRESSIONS)),
          "gaze": tfds.features.ClassLabel(names=list(GAZES)),
          "pose": tfds.features.ClassLabel(names=list(poses)),
          "gender": tfds.features.ClassLabel(names=list(GENDERS)),
          "ethnicity": tfds.features.Text(),
          "flipped": tfds.features.Scalar(np.bool_),
          "file_name": tfds.features.Text(),
        }
      ),
      homepage="https://rafd.socsci.ru.nl",
      citation=_CITATION,
      metadata=tfds.core.MetadataDict(),
    )

  def scan(self, root: pathlib.Path) -> Scan:
    return scan(root, tuple(self.builder_config.poses))

  def scheme(self) -> str:
    return f"{SCHEME} with camera angles {', '.join(self.builder_config.poses)}"

  def left_out_phrase(self, found: Scan) -> str:
    return f"{found.other_poses} image(s) of other camera angles"

  def left_out(self, found: Scan) -> dict[str, Any]:
    return {
      "other_poses": vendor.report_ignored(
        DATASET, found.other_poses, "images of camera angles not in this config"
      )
    }

  def find_incomplete(self, records: list[Record]) -> dict[str, list[str]]:
    return find_incomplete(records, tuple(self.builder_config.poses))

  def split_subjects(self, subjects: list[str]) -> tuple[list[str], list[str]]:
    absent = [s for s in TEST_SUBJECTS if s not in subjects]
    if absent:
      logging.warning(
        "%s: the test subject(s) %s have no images in the manual dir.", DATASET, " ".join(absent)
      )
    return (
      [s for s in subjects if s not in TEST_SUBJECTS],
      [s for s in subjects if s in TEST_SUBJECTS],
    )

  def preprocess(self, img: Image.Image) -> np.ndarray:
    return preprocess_image(img, self.builder_config.image_size)

  def examples(self, r: Record, image: np.ndarray, train: bool):
    """The image, and on the training split also its mirror (gaze and pose swapped)."""
    example = {
      "image": features_lib.pixels(image),
      "identity": r.subject,
      "expression": r.expression,
      "gaze": r.gaze,
      "pose": r.pose,
      "gender": r.gender,
      "ethnicity": r.ethnicity,
      "flipped": False,
      "file_name": r.file_name,
    }
    yield r.file_name, example
    if train:
      yield (
        r.file_name + FLIP_SUFFIX,
        dict(
          example,
          image=features_lib.pixels(image[:, ::-1]),
          gaze=MIRRORED_GAZE[r.gaze],
          pose=MIRRORED_POSE[r.pose],
          flipped=True,
        ),
      )

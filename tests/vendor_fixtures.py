"""Tiny fake copies of the licensed face databases, named exactly as the vendors name their files.

Each ``make_*_fixture(root, ...)`` writes small generated images into ``root`` (created if needed)
and returns ``root`` as a ``Path``, ready to be given as a builder's manual dir. Nothing here
imports the builders: the crop boxes are written down from the vendors' geometry.

Every image is painted the same way, so a test can check the crop and the labels from pixels:
the whole frame is MAGENTA except the region the vendor's crop keeps (``*_crop_box``), which
holds three horizontal bands:

* top third: ``subject_colour(subject)``;
* middle third: left-right asymmetric, a dark strip (DARK) on the left covering
  ``mark_fraction`` of the width, the rest LIGHT (so a mirror image is told apart);
* bottom third: ``expression_colour(expression)``.

No colour used inside the crop is close to MAGENTA (their green channel is >= 96, or they
are grey), so magenta in a preprocessed image means the crop took pixels it should not have.
``painting_errors(image, subject, expression)`` checks a preprocessed image against this.

``build(Builder, manual_dir, data_dir, config, **kwargs)`` prepares a builder (array_record) and
``read_split(builder, split)`` reads a split back as dicts sorted by file name.
"""

from __future__ import annotations

import pathlib
import zlib
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

MAGENTA = (255, 0, 255)
DARK = (30, 30, 30)
LIGHT = (225, 225, 225)

# ---------------------------------------------------------------------------- colours / painting


def _colour(key: str) -> tuple[int, int, int]:
  rng = np.random.default_rng(zlib.crc32(key.encode()))
  r, b = (int(v) for v in rng.integers(0, 200, 2))
  g = int(rng.integers(96, 256))
  return (r, g, b)


def subject_colour(subject: str) -> tuple[int, int, int]:
  """Colour of the top band for a subject id as the vendor writes it ('001', 'F0001', '01')."""
  return _colour("subject:" + subject)


def expression_colour(expression: str) -> tuple[int, int, int]:
  """Colour of the bottom band for an expression as the vendor writes it in the file name
  ('neutral'... for MultiPIE the expression name, 'AN' for BU-3DFE, 'angry' for RaFD)."""
  return _colour("expression:" + expression)


def paint(
  size: tuple[int, int], box: tuple[int, int, int, int], top, bottom, mark_fraction: float
) -> Image.Image:
  """The fixture image: MAGENTA outside ``box``, three bands inside (see module doc)."""
  width, height = size
  a = np.empty((height, width, 3), np.uint8)
  a[:] = MAGENTA
  left, up, right, down = box
  h = down - up
  t1, t2 = up + h // 3, up + (2 * h) // 3
  a[up:t1, left:right] = top
  a[t1:t2, left:right] = LIGHT
  mark = max(1, round((right - left) * mark_fraction))
  a[t1:t2, left : left + mark] = DARK
  a[t2:down, left:right] = bottom
  return Image.fromarray(a)


def _ids(subjects) -> list[int]:
  return list(range(1, subjects + 1)) if isinstance(subjects, int) else [int(s) for s in subjects]


# ------------------------------------------------------------------------------------- MultiPIE

MULTIPIE_RECORDINGS = {  # (session, recording) -> expression, the vendor's protocol
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


def multipie_file_name(subject: int, session: int, recording: int, illumination: int) -> str:
  """'session01/multiview/001/01/05_1/001_01_01_051_00.png' (relative to the manual dir)."""
  s = f"{subject:03d}"
  return (
    f"session{session:02d}/multiview/{s}/{recording:02d}/05_1/"
    f"{s}_{session:02d}_{recording:02d}_051_{illumination:02d}.png"
  )


def multipie_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
  """Top square, horizontally centred: 220/640 of the width (the vendor's 640×480 frame)."""
  side = round(min(width * 220 / 640, height * 220 / 480))
  left = (width - side) // 2
  return (left, 0, left + side, side)


def make_multipie_fixture(
  root,
  subjects: int | Iterable[int] = 12,
  *,
  sessions: Sequence[int] = (1, 2, 3, 4),
  illuminations: Sequence[int] = (0, 7, 14),
  size: tuple[int, int] = (64, 48),
) -> pathlib.Path:
  """MultiPIE's layout, camera 05_1 only: every recording of ``sessions`` for every subject.

  ``subjects``: a count n (subjects 001..n) or subject numbers. ``size`` is (width, height);
  the vendor's frames are 640×480, the default 64×48 keeps the same aspect (crop 22×22).
  The middle band's dark strip covers (1 + illumination % 4) / 8 of the width.
  """
  root = pathlib.Path(root)
  box = multipie_crop_box(*size)
  for subject in _ids(subjects):
    for (session, recording), expression in MULTIPIE_RECORDINGS.items():
      if session not in sessions:
        continue
      for illumination in illuminations:
        path = root / multipie_file_name(subject, session, recording, illumination)
        path.parent.mkdir(parents=True, exist_ok=True)
        paint(
          size,
          box,
          subject_colour(f"{subject:03d}"),
          expression_colour(expression),
          (1 + illumination % 4) / 8,
        ).save(path, format="PNG")
  return root


# -------------------------------------------------------------------------------------- BU-3DFE

BU3DFE_EXPRESSIONS = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
BU3DFE_RACES = ("WH", "BL", "AE", "AM", "IN", "LA")


def bu3dfe_subjects(n: int) -> list[str]:
  """n subject ids alternating female and male: F0001, M0001, F0002, M0002, ..."""
  return [f"{'FM'[i % 2]}{i // 2 + 1:04d}" for i in range(n)]


def bu3dfe_race(subject: str) -> str:
  """The race code the fixture gives a subject (deterministic)."""
  return BU3DFE_RACES[zlib.crc32(subject.encode()) % len(BU3DFE_RACES)]


def bu3dfe_file_name(subject: str, expression: str, intensity: int, race: str | None = None) -> str:
  """'F0001/F0001_AN01WH_F2D.bmp' (relative to the manual dir)."""
  race = race or bu3dfe_race(subject)
  return f"{subject}/{subject}_{expression}{intensity:02d}{race}_F2D.bmp"


def bu3dfe_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
  """A 2-px shave (then the centred square, for non-square frames; the vendor's are 512×512)."""
  w, h = width - 4, height - 4
  side = min(w, h)
  left, up = 2 + (w - side) // 2, 2 + (h - side) // 2
  return (left, up, left + side, up + side)


def make_bu3dfe_fixture(
  root,
  subjects: int | Iterable[str] = 12,
  *,
  expressions: Sequence[str] = BU3DFE_EXPRESSIONS,
  intensities: Sequence[int] = (1, 2, 3, 4),
  size: tuple[int, int] = (32, 32),
) -> pathlib.Path:
  """BU-3DFE's 2D frontal textures: ``F0001/F0001_AN01WH_F2D.bmp``.

  ``subjects``: a count n (see ``bu3dfe_subjects``) or subject ids. Neutral ('NE') has the
  single intensity 00, the others ``intensities``. The middle band's dark strip covers
  (1 + intensity) / 8 of the width.
  """
  root = pathlib.Path(root)
  ids = bu3dfe_subjects(subjects) if isinstance(subjects, int) else list(subjects)
  box = bu3dfe_crop_box(*size)
  for subject in ids:
    for expression in expressions:
      for intensity in (0,) if expression == "NE" else intensities:
        path = root / bu3dfe_file_name(subject, expression, intensity)
        path.parent.mkdir(parents=True, exist_ok=True)
        paint(
          size, box, subject_colour(subject), expression_colour(expression), (1 + intensity) / 8
        ).save(path, format="BMP")
  return root


# ----------------------------------------------------------------------------------------- RaFD

RAFD_TEST_SUBJECTS = (1, 2, 3, 4, 5, 7, 8, 64)
RAFD_POSES = ("000", "045", "090", "135", "180")
RAFD_EXPRESSIONS = (
  "angry",
  "contemptuous",
  "disgusted",
  "fearful",
  "happy",
  "neutral",
  "sad",
  "surprised",
)
RAFD_GAZES = ("frontal", "left", "right")


def rafd_subjects(n: int) -> list[int]:
  """n subject numbers: the paper's 8 test subjects first, then 6, 9, 10, 11, ..."""
  others = [6] + list(range(9, 64)) + list(range(65, 100))
  return (list(RAFD_TEST_SUBJECTS) + others)[:n]


def rafd_person(subject: int) -> tuple[str, str]:
  """(ethnicity, gender) the fixture gives a subject (deterministic)."""
  return ("Caucasian" if subject % 3 else "Moroccan", "female" if subject % 2 else "male")


def rafd_file_name(pose: str, subject: int, expression: str, gaze: str) -> str:
  """'Rafd090_01_Caucasian_female_angry_frontal.jpg' (at the top of the manual dir)."""
  ethnicity, gender = rafd_person(subject)
  return f"Rafd{pose}_{subject:02d}_{ethnicity}_{gender}_{expression}_{gaze}.jpg"


def rafd_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
  """The paper's 640×640 centre crop shifted 128 px up, as fractions of the vendor's 681×1024."""
  side = round(min(width * 640 / 681, height * 640 / 1024))
  left = (width - side) // 2
  up = max(0, (height - side) // 2 - round(height * 128 / 1024))
  return (left, up, left + side, up + side)


def make_rafd_fixture(
  root,
  subjects: int | Iterable[int] = 12,
  *,
  poses: Sequence[str] = ("090",),
  expressions: Sequence[str] = RAFD_EXPRESSIONS,
  gazes: Sequence[str] = RAFD_GAZES,
  size: tuple[int, int] = (43, 64),
) -> pathlib.Path:
  """RaFD's flat folder of ``Rafd090_01_Caucasian_female_angry_frontal.jpg`` files.

  ``subjects``: a count n (see ``rafd_subjects``: 12 gives the 8 test subjects + 4) or subject
  numbers. ``size`` is (width, height); the vendor's are 681×1024 (portrait), the default
  43×64 keeps the aspect (crop 40×40 at (1, 4)). JPEG quality 95 without chroma subsampling.
  The middle band's dark strip covers (1 + gaze index) / 8 of the width, where gaze index is
  0 frontal, 1 left, 2 right.
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  ids = rafd_subjects(subjects) if isinstance(subjects, int) else [int(s) for s in subjects]
  box = rafd_crop_box(*size)
  for subject in ids:
    for pose in poses:
      for expression in expressions:
        for gaze in gazes:
          img = paint(
            size,
            box,
            subject_colour(f"{subject:02d}"),
            expression_colour(expression),
            (1 + RAFD_GAZES.index(gaze)) / 8,
          )
          img.save(
            root / rafd_file_name(pose, subject, expression, gaze),
            format="JPEG",
            quality=95,
            subsampling=0,
          )
  return root


# ------------------------------------------------------------------------------ building helpers


def build(builder_cls, manual_dir, data_dir, config: str | None = None, **kwargs):
  """Constructs ``builder_cls`` (array_record) and prepares it from ``manual_dir``."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = builder_cls(config=config, data_dir=str(data_dir), file_format="array_record", **kwargs)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def read_split(builder, split: str) -> list[dict]:
  """All records of a split as dicts, text features decoded to ``str``, sorted by file name
  (data sources return records in hashed order)."""
  source = builder.as_data_source(split)
  records = []
  for i in range(len(source)):
    r = dict(source[i])
    for k, v in r.items():
      if isinstance(v, bytes):
        r[k] = v.decode("utf-8")
    records.append(r)
  return sorted(records, key=lambda r: (r["file_name"], bool(r.get("flipped", False))))


def painting_errors(
  image: np.ndarray, subject: str, expression: str, *, tolerance: int = 8, mirrored: bool = False
) -> list[str]:
  """What is wrong with a preprocessed fixture image (an empty list if nothing).

  Checks that no MAGENTA from outside the vendor's crop got in, that the top rows have the
  subject's colour and the bottom rows the expression's (so the crop is where it should be and
  the right way up), and that the middle band's dark strip is on the left (on the right if
  ``mirrored``). ``tolerance`` is per channel, on the median of the rows checked.
  """
  a = np.asarray(image).astype(int)
  s = a.shape[0]
  errors = []
  magenta = (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] > 200)
  if magenta.any():
    ys, xs = np.nonzero(magenta)
    errors.append(f"{magenta.sum()} magenta pixel(s), e.g. at (x={xs[0]}, y={ys[0]})")
  k = max(1, s // 6)
  for name, rows, want in (
    ("top", a[1:k], subject_colour(subject)),
    ("bottom", a[s - k : s - 1], expression_colour(expression)),
  ):
    got = np.median(rows.reshape(-1, 3), axis=0)
    if np.abs(got - np.asarray(want)).max() > tolerance:
      errors.append(f"{name} rows have colour {got.tolist()}, expected {list(want)}")
  middle = a[s // 2]
  left, right = middle[: max(1, s // 32)].mean(), middle[-max(1, s // 32) :].mean()
  dark_side, light_side = (right, left) if mirrored else (left, right)
  if not dark_side < 90 < 170 < light_side:
    errors.append(
      f"middle band: left mean {left:.0f}, right mean {right:.0f} "
      f"(dark strip expected on the {'right' if mirrored else 'left'})"
    )
  return errors


def stored_records(builder, split: str) -> list[bytes]:
  """The serialized examples of a prepared split, as written in its array_record files."""
  from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=g-import-not-at-top

  records = []
  for path in sorted(pathlib.Path(builder.data_dir).glob(f"*-{split}.array_record-*")):
    reader = ArrayRecordReader(str(path))
    records += reader.read_all()
    reader.close()
  return records


def assert_images_stored_raw(builder, split: str = "train") -> None:
  """Every stored example holds its image's pixels byte for byte (reading is a copy), and no
  PNG."""
  source = builder.as_data_source(split)
  records = stored_records(builder, split)
  assert len(records) == len(source) > 0
  images = {np.asarray(source[i]["image"]).tobytes() for i in range(len(source))}
  for record in records:
    assert b"\x89PNG" not in record
    assert any(image in record for image in images)

"""The RaFD builder on fixture folders named the way Radboud University names its files."""

import logging
import re

import numpy as np
from PIL import Image
import pytest

from attrdis_datasets import vendor
from attrdis_datasets.rafd import rafd_dataset_builder as rf
import vendor_fixtures as vf

NAME_RE = re.compile(r"Rafd(\d{3})_(\d{2})_([A-Za-z]+)_(female|male)_([a-z]+)_([a-z]+)\.jpg")
TEST_SUBJECTS = {"01", "02", "03", "04", "05", "07", "08", "64"}
SWAPPED = {"left": "right", "right": "left", "frontal": "frontal"}
JPEG_TOLERANCE = 24


def parse(file_name):
  pose, subject, ethnicity, gender, expression, gaze = NAME_RE.fullmatch(file_name).groups()
  return dict(
    pose=pose, subject=subject, ethnicity=ethnicity, gender=gender, expression=expression, gaze=gaze
  )


@pytest.fixture(scope="module")
def frontal(tmp_path_factory):
  """frontal_64 built from the 8 test subjects + 06 09 10 11, frontal camera, 8×3 each."""
  root = tmp_path_factory.mktemp("rafd")
  manual = vf.make_rafd_fixture(root / "manual", subjects=12)
  return vf.build(rf.Builder, manual, root / "data", "frontal_64"), manual


def test_config_names_and_features(frontal, tmp_path):
  builder, _ = frontal
  assert [c.name for c in rf.Builder.BUILDER_CONFIGS] == [
    "frontal",
    "frontal_64",
    "all_poses",
    "all_poses_64",
  ]
  assert rf.Builder(data_dir=str(tmp_path)).builder_config.name == "frontal"
  f = builder.info.features
  assert f["image"].shape == (64, 64, 3)
  assert f["expression"].names == [
    "angry",
    "contemptuous",
    "disgusted",
    "fearful",
    "happy",
    "neutral",
    "sad",
    "surprised",
  ]
  assert f["gaze"].names == ["frontal", "left", "right"]
  assert f["pose"].names == ["090"]
  assert f["identity"].names == [
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "07",
    "08",
    "09",
    "10",
    "11",
    "64",
  ]


def test_split_sizes_and_test_subjects(frontal):
  builder, _ = frontal
  train, test = vf.read_split(builder, "train"), vf.read_split(builder, "test")
  assert len(test) == 8 * 24 and len(train) == 4 * 24 * 2  # training images + their mirrors
  names = builder.info.features["identity"].names
  assert {names[r["identity"]] for r in test} == TEST_SUBJECTS
  assert {names[r["identity"]] for r in train} == {"06", "09", "10", "11"}
  assert not any(r["flipped"] for r in test)
  assert sum(r["flipped"] for r in train) == 4 * 24
  assert builder.info.metadata["test_subjects"] == sorted(TEST_SUBJECTS)


def test_labels_follow_the_file_names(frontal):
  builder, manual = frontal
  f = builder.info.features
  for r in vf.read_split(builder, "train") + vf.read_split(builder, "test"):
    p = parse(r["file_name"])
    assert (manual / r["file_name"]).is_file()
    assert f["identity"].names[r["identity"]] == p["subject"]
    assert f["expression"].names[r["expression"]] == p["expression"]
    assert f["pose"].names[r["pose"]] == p["pose"] == "090"
    assert f["gender"].names[r["gender"]] == p["gender"]
    assert r["ethnicity"] == p["ethnicity"]
    want_gaze = SWAPPED[p["gaze"]] if r["flipped"] else p["gaze"]
    assert f["gaze"].names[r["gaze"]] == want_gaze


def test_training_mirrors_are_flipped_pixels_with_swapped_gaze(frontal):
  builder, _ = frontal
  f = builder.info.features
  train = vf.read_split(builder, "train")
  pairs = {}
  for r in train:
    pairs.setdefault(r["file_name"], {})[r["flipped"]] = r
  assert len(pairs) == 4 * 24 and all(set(p) == {False, True} for p in pairs.values())
  swapped_lr = 0
  for name, p in pairs.items():
    original, mirror = p[False], p[True]
    np.testing.assert_array_equal(mirror["image"], original["image"][:, ::-1])
    assert not np.array_equal(mirror["image"], original["image"])  # the images are asymmetric
    gaze, mirror_gaze = f["gaze"].names[original["gaze"]], f["gaze"].names[mirror["gaze"]]
    assert mirror_gaze == SWAPPED[gaze]
    swapped_lr += gaze != mirror_gaze
    for k in ("identity", "expression", "pose", "gender", "ethnicity"):
      assert mirror[k] == original[k], (name, k)
    # The fixture's dark strip is on the left of the face; on the mirror, on the right.
    p_ = parse(name)
    assert (
      vf.painting_errors(
        mirror["image"], p_["subject"], p_["expression"], tolerance=JPEG_TOLERANCE, mirrored=True
      )
      == []
    )
  assert swapped_lr == 4 * 8 * 2  # every left and every right gaze image


def test_crop_is_the_centre_square_shifted_up(frontal):
  builder, _ = frontal
  for r in vf.read_split(builder, "test")[::7] + vf.read_split(builder, "train")[::9]:
    p = parse(r["file_name"])
    errors = vf.painting_errors(
      r["image"], p["subject"], p["expression"], tolerance=JPEG_TOLERANCE, mirrored=r["flipped"]
    )
    assert errors == [], r["file_name"]


def test_preprocess_image_at_the_vendor_resolution():
  noise = np.random.default_rng(2).integers(0, 256, (1024, 681, 3), dtype=np.uint8)
  img = Image.fromarray(noise)
  assert rf.crop_box(681, 1024) == (20, 64, 660, 704)
  want = np.asarray(img.crop((20, 64, 660, 704)).resize((128, 128), Image.Resampling.LANCZOS))
  got = rf.preprocess_image(img, 128)
  assert got.dtype == np.uint8 and got.shape == (128, 128, 3)
  np.testing.assert_array_equal(got, want)
  # Smaller frames: the same fractions of the frame (documented in crop_box).
  assert rf.crop_box(43, 64) == (1, 4, 41, 44)
  assert rf.crop_box(341, 512) == (10, 32, 330, 352)


def test_all_poses_config_labels_pose_and_mirrors_it(tmp_path):
  manual = vf.make_rafd_fixture(
    tmp_path / "manual",
    subjects=[1, 9],
    poses=vf.RAFD_POSES,
    expressions=("happy",),
    gazes=("left", "frontal"),
  )
  builder = vf.build(rf.Builder, manual, tmp_path / "data", "all_poses_64")
  f = builder.info.features
  assert f["pose"].names == ["000", "045", "090", "135", "180"]
  test, train = vf.read_split(builder, "test"), vf.read_split(builder, "train")
  assert len(test) == 5 * 2 and len(train) == 5 * 2 * 2
  mirrored = {"000": "180", "045": "135", "090": "090", "135": "045", "180": "000"}
  for r in train + test:
    p = parse(r["file_name"])
    want = mirrored[p["pose"]] if r["flipped"] else p["pose"]
    assert f["pose"].names[r["pose"]] == want
  # The fixture holds 1 expression × 2 gazes per pose: each subject is reported incomplete.
  missing = builder.info.metadata["incomplete_subjects"]
  assert set(missing) == {"01", "09"}
  assert missing["09"] == [
    f"pose {p}: angry, contemptuous, disgusted, fearful, happy/right, neutral, sad, surprised"
    for p in vf.RAFD_POSES
  ]
  # The frontal config on the same folder keeps camera 090 only and says it left the rest out.
  frontal = vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")
  assert len(vf.read_split(frontal, "test")) == 2
  assert frontal.info.metadata["left_out"]["other_poses"]["count"] == 4 * 2 * 2


def test_invalid_pose_config_is_refused(tmp_path):
  config = rf.RafdConfig(name="left_side", image_size=32, poses=("045",))
  with pytest.raises(ValueError, match="mirror"):
    rf.Builder(config=config, data_dir=str(tmp_path))


def test_missing_or_empty_manual_dir_prints_the_instructions(tmp_path):
  (tmp_path / "empty").mkdir()
  for manual in (tmp_path / "absent", tmp_path / "empty"):
    with pytest.raises(vendor.MissingManualDataError) as e:
      vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")
    assert "Rafd090_01_Caucasian_female_angry_frontal.jpg" in str(e.value)
    assert "rafd.socsci.ru.nl" in str(e.value)


def test_non_matching_files_are_counted_and_named(tmp_path, caplog):
  manual = vf.make_rafd_fixture(tmp_path / "manual", subjects=[1, 9], expressions=("sad",))
  (manual / "Rafd090_09_Caucasian_female_bored_frontal.jpg").write_bytes(b"no such expression")
  (manual / "Rafd090_09_Caucasian_female_sad_up.jpg").write_bytes(b"no such gaze")
  (manual / "Rafd091_09_Caucasian_female_sad_left.jpg").write_bytes(b"no such camera")
  (manual / "IMG_0001.jpg").write_bytes(b"?")
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder = vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")
  warning = [r.getMessage() for r in caplog.records if "do not match" in r.getMessage()]
  assert len(warning) == 1 and "4 file(s)" in warning[0] and "IMG_0001.jpg" in warning[0]
  assert builder.info.metadata["unmatched_files"]["count"] == 4
  assert len(vf.read_split(builder, "train")) == 3 * 2 and len(vf.read_split(builder, "test")) == 3


def test_missing_test_subjects_are_reported(tmp_path, caplog):
  manual = vf.make_rafd_fixture(tmp_path / "manual", subjects=[1, 9], expressions=("sad",))
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder = vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")
  assert any("02 03 04 05 07 08 64" in r.getMessage() for r in caplog.records)
  assert builder.info.metadata["test_subjects"] == ["01"]


def test_a_truncated_jpeg_stops_the_build_or_is_skipped(tmp_path):
  manual = vf.make_rafd_fixture(tmp_path / "manual", subjects=[1, 9], expressions=("fearful",))
  name = vf.rafd_file_name("090", 9, "fearful", "left")
  data = (manual / name).read_bytes()
  (manual / name).write_bytes(data[: len(data) // 2])
  with pytest.raises(vendor.BadImageError) as e:
    vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")
  assert str(manual / name) in str(e.value)
  builder = vf.build(rf.Builder, manual, tmp_path / "data2", "frontal_64", skip_bad_images=True)
  train = vf.read_split(builder, "train")
  assert len(train) == (3 - 1) * 2 and name not in {r["file_name"] for r in train}
  assert [s["file_name"] for s in builder.info.metadata["skipped_images"]] == [name]


def test_no_training_subjects_is_an_error(tmp_path):
  manual = vf.make_rafd_fixture(tmp_path / "manual", subjects=[1, 2], expressions=("sad",))
  with pytest.raises(vendor.NotEnoughSubjectsError):
    vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")


def test_a_folder_with_only_other_camera_angles_is_refused(tmp_path):
  manual = vf.make_rafd_fixture(
    tmp_path / "manual", subjects=[9], poses=("045",), expressions=("sad",)
  )
  with pytest.raises(
    vendor.MissingManualDataError,
    match=r"left out by this config: 3 image\(s\) of other camera angles",
  ):
    vf.build(rf.Builder, manual, tmp_path / "data", "frontal_64")

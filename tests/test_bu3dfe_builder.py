"""The BU-3DFE builder on fixture folders named the way Binghamton names its files."""

import logging
import re

import numpy as np
from PIL import Image
import pytest

from attrdis_datasets import vendor
from attrdis_datasets.bu3dfe import bu3dfe_dataset_builder as bu
import vendor_fixtures as vf

EXPECTED_EXPRESSION = {
  "AN": "anger",
  "DI": "disgust",
  "FE": "fear",
  "HA": "happiness",
  "NE": "neutral",
  "SA": "sadness",
  "SU": "surprise",
}
NAME_RE = re.compile(r"([FM]\d{4})/\1_([A-Z]{2})(\d{2})([A-Z]{2})_F2D\.bmp")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """default_64 built from 12 subjects × 25 images."""
  root = tmp_path_factory.mktemp("bu3dfe")
  manual = vf.make_bu3dfe_fixture(root / "manual", subjects=12)
  return vf.build(bu.Builder, manual, root / "data", "default_64"), manual


def test_config_names_and_features(built, tmp_path):
  builder, _ = built
  assert [c.name for c in bu.Builder.BUILDER_CONFIGS] == ["default", "default_64"]
  assert bu.Builder(data_dir=str(tmp_path)).builder_config.image_size == 128
  f = builder.info.features
  assert f["image"].shape == (64, 64, 3)
  assert f["expression"].names == [
    "anger",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
  ]
  assert f["sex"].names == ["female", "male"]
  assert f["identity"].names == sorted(vf.bu3dfe_subjects(12))


def test_split_by_seeded_permutation_recorded_in_the_info(built):
  builder, _ = built
  train, test = vf.read_split(builder, "train"), vf.read_split(builder, "test")
  assert len(train) == 2 * 25 and len(test) == 10 * 25
  names = builder.info.features["identity"].names
  test_subjects = {names[r["identity"]] for r in test}
  train_subjects = {names[r["identity"]] for r in train}
  assert len(test_subjects) == 10 and len(train_subjects) == 2
  assert not test_subjects & train_subjects
  # The seeded permutation of the sorted ids, written out independently of the builder.
  ids = sorted(vf.bu3dfe_subjects(12))
  expected = sorted(ids[i] for i in np.random.default_rng(0).permutation(12)[:10])
  assert sorted(test_subjects) == expected
  assert builder.info.metadata["test_subjects"] == expected
  assert "default_rng(0)" in builder.info.metadata["test_split_rule"]
  assert "permutation" in builder.info.description
  # Not just the first ten: a permutation, and the same one every build.
  assert expected != ids[:10]


def test_labels_follow_the_file_names(built):
  builder, manual = built
  f = builder.info.features
  records = vf.read_split(builder, "train") + vf.read_split(builder, "test")
  assert len({r["file_name"] for r in records}) == 12 * 25
  for r in records:
    subject, code, intensity, race = NAME_RE.fullmatch(r["file_name"]).groups()
    assert (manual / r["file_name"]).is_file()
    assert f["identity"].names[r["identity"]] == subject
    assert f["expression"].names[r["expression"]] == EXPECTED_EXPRESSION[code]
    assert r["intensity"] == int(intensity) and (intensity == "00") == (code == "NE")
    assert r["race"] == race == vf.bu3dfe_race(subject)
    assert f["sex"].names[r["sex"]] == {"F": "female", "M": "male"}[subject[0]]


def test_the_2px_border_is_shaved(built):
  builder, _ = built
  for r in vf.read_split(builder, "train")[::3] + vf.read_split(builder, "test")[::11]:
    subject, code, _, _ = NAME_RE.fullmatch(r["file_name"]).groups()
    assert vf.painting_errors(r["image"], subject, code) == [], r["file_name"]


def test_preprocess_image_at_the_vendor_resolution():
  noise = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
  img = Image.fromarray(noise)
  assert bu.crop_box(512, 512) == (2, 2, 510, 510)
  want = np.asarray(img.crop((2, 2, 510, 510)).resize((128, 128), Image.Resampling.LANCZOS))
  got = bu.preprocess_image(img, 128)
  assert got.dtype == np.uint8 and got.shape == (128, 128, 3)
  np.testing.assert_array_equal(got, want)
  assert bu.crop_box(40, 30) == (7, 2, 33, 28)  # a non-square frame keeps its centred square
  with pytest.raises(ValueError):
    bu.crop_box(4, 4)


def test_missing_manual_dir_prints_the_instructions(tmp_path):
  with pytest.raises(vendor.MissingManualDataError) as e:
    vf.build(bu.Builder, tmp_path / "absent", tmp_path / "data", "default_64")
  assert "F0001/F0001_AN01WH_F2D.bmp" in str(e.value) and "Binghamton" in str(e.value)


def test_other_vendor_files_and_non_matching_files(tmp_path, caplog):
  manual = vf.make_bu3dfe_fixture(tmp_path / "manual", subjects=11, intensities=(4,))
  (manual / "F0001" / "F0001_AN04WH_F3D.wrl").write_text("a 3D model")  # vendor's, left out
  (manual / "F0001" / "F0001_AN04WH_F3D.bmp").write_bytes(b"a 3D texture")  # vendor's
  (manual / "F0001" / "Thumbs.db").write_bytes(b"?")
  (manual / "F0001" / "F0001_XX01WH_F2D.bmp").write_bytes(b"unknown expression code")
  (manual / "F0001" / "F0001_NE02WH_F2D.bmp").write_bytes(b"neutral has intensity 00 only")
  (manual / "F0001" / "F0002_AN04WH_F2D.bmp").write_bytes(b"in another subject's folder")
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder = vf.build(bu.Builder, manual, tmp_path / "data", "default_64")
  warning = [r.getMessage() for r in caplog.records if "do not match" in r.getMessage()]
  assert len(warning) == 1 and "4 file(s)" in warning[0] and "Thumbs.db" in warning[0]
  meta = builder.info.metadata
  assert meta["unmatched_files"]["count"] == 4
  assert "F0001/F0002_AN04WH_F2D.bmp" in meta["unmatched_files"]["first"]
  assert meta["left_out"]["other_vendor_files"]["count"] == 2
  assert len(vf.read_split(builder, "train")) + len(vf.read_split(builder, "test")) == 11 * 7


def test_incomplete_subject_is_named_with_what_is_missing(tmp_path, caplog):
  manual = vf.make_bu3dfe_fixture(tmp_path / "manual", subjects=11)
  (manual / vf.bu3dfe_file_name("M0002", "SA", 3)).unlink()
  (manual / vf.bu3dfe_file_name("M0002", "NE", 0)).unlink()
  for intensity in (1, 2, 3, 4):
    (manual / vf.bu3dfe_file_name("F0004", "FE", intensity)).unlink()
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder = vf.build(bu.Builder, manual, tmp_path / "data", "default_64")
  text = "\n".join(r.getMessage() for r in caplog.records)
  assert "2 subject(s) have an incomplete set" in text
  assert "F0004 (missing FE01-FE04)" in text and "M0002 (missing NE00, SA03)" in text
  assert builder.info.metadata["incomplete_subjects"] == {
    "F0004": ["FE01-FE04"],
    "M0002": ["NE00, SA03"],
  }


def test_a_truncated_bmp_stops_the_build_or_is_skipped(tmp_path):
  manual = vf.make_bu3dfe_fixture(tmp_path / "manual", subjects=11, intensities=(2,))
  bad = manual / vf.bu3dfe_file_name("F0003", "HA", 2)
  data = bad.read_bytes()
  bad.write_bytes(data[: len(data) - 100])
  with pytest.raises(vendor.BadImageError) as e:
    vf.build(bu.Builder, manual, tmp_path / "data", "default_64")
  assert str(bad) in str(e.value)
  builder = vf.build(bu.Builder, manual, tmp_path / "data2", "default_64", skip_bad_images=True)
  records = vf.read_split(builder, "train") + vf.read_split(builder, "test")
  assert len(records) == 11 * 7 - 1
  assert [s["file_name"] for s in builder.info.metadata["skipped_images"]] == [
    vf.bu3dfe_file_name("F0003", "HA", 2)
  ]

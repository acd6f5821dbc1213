"""The MultiPIE builder on fixture folders named the way CMU names its files."""

import collections
import logging
import pathlib
import re

import numpy as np
from PIL import Image
import pytest

from attrdis_datasets import vendor
from attrdis_datasets.multipie import multipie_dataset_builder as mp
import vendor_fixtures as vf

# The vendor's protocol (docs/design.md §3.2), written out again here on purpose.
EXPECTED_EXPRESSION = {
  (1, 1): "neutral",
  (2, 1): "neutral",
  (3, 1): "neutral",
  (4, 1): "neutral",
  (4, 2): "neutral",
  (1, 2): "smile",
  (3, 2): "smile",
  (2, 2): "surprise",
  (2, 3): "squint",
  (3, 3): "disgust",
  (4, 3): "scream",
}
NAME_RE = re.compile(r"session0(\d)/multiview/(\d{3})/(\d{2})/05_1/\2_0\1_\3_051_(\d{2})\.png")


def parse(file_name):
  session, subject, recording, illumination = NAME_RE.fullmatch(file_name).groups()
  return subject, int(session), int(recording), int(illumination)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
  """paper_64 built from 12 subjects × 4 sessions × 3 illuminations."""
  root = tmp_path_factory.mktemp("multipie")
  manual = vf.make_multipie_fixture(root / "manual", subjects=12)
  builder = vf.build(mp.Builder, manual, root / "data", "paper_64")
  return builder, manual


def test_config_names_and_features(paper, tmp_path):
  builder, _ = paper
  assert [c.name for c in mp.Builder.BUILDER_CONFIGS] == [
    "paper",
    "paper_64",
    "all_expressions",
    "all_expressions_64",
  ]
  assert mp.Builder.BUILDER_CONFIGS[0].image_size == 128
  assert mp.Builder(data_dir=str(tmp_path)).builder_config.name == "paper"  # the default
  f = builder.info.features
  assert f["image"].shape == (64, 64, 3)
  assert f["expression"].names == ["neutral", "scream", "squint", "surprise"]
  assert f["illumination"].names == [f"{i:02d}" for i in range(20)]
  assert f["identity"].names == [f"{i:03d}" for i in range(1, 13)]
  assert builder.info.file_format.value == "array_record"
  assert list(pathlib.Path(builder.data_dir).glob("multipie-train.array_record*"))
  vf.assert_images_stored_raw(builder)


def test_split_sizes_and_held_out_subjects(paper):
  builder, _ = paper
  train, test = vf.read_split(builder, "train"), vf.read_split(builder, "test")
  # Paper subset per subject: 5 neutral + scream + squint + surprise recordings, 3 flashes each.
  assert len(train) == 2 * 8 * 3 and len(test) == 10 * 8 * 3
  names = builder.info.features["identity"].names
  assert {names[r["identity"]] for r in test} == {f"{i:03d}" for i in range(1, 11)}
  assert {names[r["identity"]] for r in train} == {"011", "012"}
  assert builder.info.metadata["test_subjects"] == [f"{i:03d}" for i in range(1, 11)]
  # Every vendor file of the four expressions is in exactly one split.
  assert len({r["file_name"] for r in train + test}) == len(train) + len(test)


def test_labels_follow_the_file_names_and_expression_table(paper):
  builder, manual = paper
  f = builder.info.features
  records = vf.read_split(builder, "train") + vf.read_split(builder, "test")
  seen = collections.Counter()
  for r in records:
    subject, session, recording, illumination = parse(r["file_name"])
    assert (manual / r["file_name"]).is_file()
    assert f["identity"].names[r["identity"]] == subject
    assert f["expression"].names[r["expression"]] == EXPECTED_EXPRESSION[(session, recording)]
    assert f["illumination"].names[r["illumination"]] == f"{illumination:02d}"
    assert (r["session"], r["recording"]) == (session, recording)
    seen[EXPECTED_EXPRESSION[(session, recording)]] += 1
  # No smile or disgust in the paper's subset; neutral comes from five recordings.
  assert seen == {"neutral": 12 * 5 * 3, "scream": 36, "squint": 36, "surprise": 36}


def test_crop_keeps_the_top_centre_square(paper):
  builder, _ = paper
  for r in vf.read_split(builder, "train")[::5] + vf.read_split(builder, "test")[::17]:
    subject, session, recording, illumination = parse(r["file_name"])
    errors = vf.painting_errors(r["image"], subject, EXPECTED_EXPRESSION[(session, recording)])
    assert errors == [], r["file_name"]


def test_preprocess_image_at_the_vendor_resolution():
  noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
  img = Image.fromarray(noise)
  assert mp.crop_box(640, 480) == (210, 0, 430, 220)
  want = np.asarray(img.crop((210, 0, 430, 220)).resize((128, 128), Image.Resampling.LANCZOS))
  got = mp.preprocess_image(img, 128)
  assert got.dtype == np.uint8 and got.shape == (128, 128, 3)
  np.testing.assert_array_equal(got, want)
  # Grey or RGBA inputs come out as RGB; other sizes keep the same fractions.
  assert mp.preprocess_image(img.convert("L"), 32).shape == (32, 32, 3)
  assert mp.crop_box(64, 48) == (21, 0, 43, 22)


def test_all_expressions_config(tmp_path):
  manual = vf.make_multipie_fixture(tmp_path / "manual", subjects=11, illuminations=(3,))
  builder = vf.build(mp.Builder, manual, tmp_path / "data", "all_expressions_64")
  f = builder.info.features
  assert f["expression"].names == ["disgust", "neutral", "scream", "smile", "squint", "surprise"]
  records = vf.read_split(builder, "train") + vf.read_split(builder, "test")
  assert len(records) == 11 * 11
  for r in records:
    _, session, recording, _ = parse(r["file_name"])
    assert f["expression"].names[r["expression"]] == EXPECTED_EXPRESSION[(session, recording)]
  assert len(vf.read_split(builder, "train")) == 11  # subject 011 only


def test_custom_config_object(tmp_path):
  manual = vf.make_multipie_fixture(
    tmp_path / "manual", subjects=11, sessions=(1,), illuminations=(0,)
  )
  config = mp.MultiPieConfig(name="neutral_24", image_size=24, expressions=("neutral",))
  builder = vf.build(mp.Builder, manual, tmp_path / "data", config)
  assert builder.info.features["image"].shape == (24, 24, 3)
  assert [r["image"].shape for r in vf.read_split(builder, "train")] == [(24, 24, 3)]


def test_missing_or_empty_manual_dir_prints_the_instructions(tmp_path):
  for manual in (tmp_path / "absent", tmp_path / "empty"):
    if manual.name == "empty":
      manual.mkdir()
    with pytest.raises(vendor.MissingManualDataError) as e:
      vf.build(mp.Builder, manual, tmp_path / "data", "paper_64")
    message = str(e.value)
    assert "session0S/multiview/SSS/RR/05_1/SSS_0S_RR_051_II.png" in message
    assert "Carnegie Mellon" in message and str(manual) in message


def test_a_folder_without_vendor_files_is_refused(tmp_path):
  (tmp_path / "manual" / "photos").mkdir(parents=True)
  (tmp_path / "manual" / "photos" / "face_001.png").write_bytes(b"x")
  with pytest.raises(vendor.MissingManualDataError, match="face_001.png") as e:
    vf.build(mp.Builder, tmp_path / "manual", tmp_path / "data", "paper_64")
  assert "session01/multiview/001/01/05_1/001_01_01_051_00.png" in str(e.value)


def test_non_matching_files_are_counted_and_named(tmp_path, caplog):
  manual = vf.make_multipie_fixture(tmp_path / "manual", subjects=11, illuminations=(0,))
  (manual / "session01/multiview/011/01/05_1/notes.txt").write_text("hi")
  (manual / "011_01_01_051_00.png").write_bytes(b"a stray copy")  # not in its folder
  (manual / "session01/multiview/011/01/05_1/011_01_01_051_25.png").write_bytes(b"no flash 25")
  other_camera = manual / "session01/multiview/011/01/19_1"
  other_camera.mkdir()
  (other_camera / "011_01_01_191_00.png").write_bytes(b"another camera")
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder = vf.build(mp.Builder, manual, tmp_path / "data", "paper_64")
  warning = [r.getMessage() for r in caplog.records if "do not match" in r.getMessage()]
  assert len(warning) == 1
  assert "3 file(s)" in warning[0] and "notes.txt" in warning[0]
  assert "011_01_01_051_00.png" in warning[0] and "_25.png" in warning[0]
  meta = builder.info.metadata
  assert meta["unmatched_files"]["count"] == 3
  assert meta["left_out"]["other_camera_folders"]["count"] == 1
  assert meta["left_out"]["other_expressions"]["count"] == 11 * 3  # smile ×2, disgust
  assert len(vf.read_split(builder, "train")) + len(vf.read_split(builder, "test")) == 11 * 8


def test_incomplete_subjects_are_named_with_what_is_missing(tmp_path, caplog):
  manual = vf.make_multipie_fixture(tmp_path / "manual", subjects=12, illuminations=(0, 7))
  for p in manual.glob("session03/multiview/012/*/05_1/*.png"):
    p.unlink()
  (manual / vf.multipie_file_name(11, 1, 1, 7)).unlink()
  (manual / vf.multipie_file_name(11, 4, 3, 0)).unlink()
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder = vf.build(mp.Builder, manual, tmp_path / "data", "paper_64")
  text = "\n".join(r.getMessage() for r in caplog.records if "incomplete" in r.getMessage())
  assert "2 subject(s)" in text
  assert "012 (missing session 3)" in text
  assert (
    "011 (missing session 1 recording 01 illuminations 07; "
    "session 4 recording 03 illuminations 00)" in text
  )
  assert builder.info.metadata["incomplete_subjects"] == {
    "011": ["session 1 recording 01 illuminations 07", "session 4 recording 03 illuminations 00"],
    "012": ["session 3"],
  }


def _truncate(path: pathlib.Path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def test_a_truncated_image_stops_the_build_with_its_path(tmp_path):
  manual = vf.make_multipie_fixture(tmp_path / "manual", subjects=11, illuminations=(0,))
  bad = manual / vf.multipie_file_name(11, 2, 2, 0)
  _truncate(bad)
  with pytest.raises(vendor.BadImageError) as e:
    vf.build(mp.Builder, manual, tmp_path / "data", "paper_64")
  assert str(bad) in str(e.value) and "skip_bad_images=True" in str(e.value)


def test_skip_bad_images_skips_and_lists_them(tmp_path):
  manual = vf.make_multipie_fixture(tmp_path / "manual", subjects=11, illuminations=(0,))
  _truncate(manual / vf.multipie_file_name(11, 2, 2, 0))
  (manual / vf.multipie_file_name(1, 1, 1, 0)).write_bytes(b"")  # empty file
  builder = vf.build(mp.Builder, manual, tmp_path / "data", "paper_64", skip_bad_images=True)
  train, test = vf.read_split(builder, "train"), vf.read_split(builder, "test")
  assert len(train) == 8 - 1 and len(test) == 10 * 8 - 1
  skipped = {s["file_name"] for s in builder.info.metadata["skipped_images"]}
  assert skipped == {vf.multipie_file_name(11, 2, 2, 0), vf.multipie_file_name(1, 1, 1, 0)}
  assert not skipped & {r["file_name"] for r in train + test}
  # The list is kept with the prepared data.
  again = mp.Builder(config="paper_64", data_dir=str(tmp_path / "data"))
  assert {s["file_name"] for s in again.info.metadata["skipped_images"]} == skipped
  assert again.info.metadata["skip_bad_images"] is True


def test_too_few_subjects_for_a_training_split(tmp_path):
  manual = vf.make_multipie_fixture(
    tmp_path / "manual", subjects=10, sessions=(1,), illuminations=(0,)
  )
  with pytest.raises(vendor.NotEnoughSubjectsError, match="10 subject"):
    vf.build(mp.Builder, manual, tmp_path / "data", "paper_64")

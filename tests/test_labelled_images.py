"""The labelled-folder dataset (``labelled_images``): the builder on folders the tests paint,
one test per kind of bad input, the config and its command-line overrides, and the documented
commands end to end (train with run_train.py, sample, evaluate) on the worked example's folder."""

import json
import logging
import os
import pathlib
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image
import pytest

from attrdis import checkpoints
from attrdis import cli
from attrdis import configuration
from attrdis import errors
from attrdis import evaluate as ev
from attrdis import fid
from attrdis import image_io
from attrdis import input_pipeline
from attrdis import sample
from attrdis import tuple_flags
from attrdis.evaluation import context
from attrdis.evaluation import networks
from attrdis.evaluation import synthesis
from attrdis_datasets import vendor
from attrdis_datasets.labelled_images import example
from attrdis_datasets.labelled_images import labelled_images_dataset_builder as lb
import vendor_fixtures as vf

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAGENTA = (255, 0, 255)
IDS = ("ann", "bob", "cat", "dan", "eve")
EXPRESSIONS = ("neutral", "happy", "sad")


def colour(key: str) -> tuple[int, int, int]:
  """A colour far from magenta (green ≥ 96) for a label value."""
  rng = np.random.default_rng(sum(map(ord, key)) * 7919 + len(key))
  return (int(rng.integers(0, 200)), int(rng.integers(96, 256)), int(rng.integers(0, 200)))


def paint(path, top, bottom, size=(24, 32)):
  """A width×height frame, magenta outside its centred square; inside, the top half ``top``
  and the bottom half ``bottom``."""
  width, height = size
  a = np.empty((height, width, 3), np.uint8)
  a[:] = MAGENTA
  side = min(width, height)
  left, up = (width - side) // 2, (height - side) // 2
  a[up : up + side // 2, left : left + side] = top
  a[up + side // 2 : up + side, left : left + side] = bottom
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(a).save(path)


def make_folder(root, ids=IDS, expressions=EXPRESSIONS, header="file,identity,expression"):
  """photos/<id>_<expression>.png painted with the identity's colour on top and the
  expression's below, and labels.csv; returns (root, the CSV rows)."""
  root = pathlib.Path(root)
  rows = []
  for i in ids:
    for e in expressions:
      file = f"photos/{i}_{e}.png"
      paint(root / file, colour(i), colour(e))
      rows.append((file, i, e))
  write_csv(root, [header] + [",".join(r) for r in rows])
  return root, rows


def write_csv(root, lines, name="labels.csv"):
  (pathlib.Path(root) / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(manual, data_dir, **options):
  skip = options.pop("skip_bad_images", False)
  name = options.pop("name", "t")
  config = lb.FolderConfig(name=name, **dict(dict(image_size=8), **options))
  return vf.build(lb.Builder, manual, data_dir, config, skip_bad_images=skip)


def records(builder, split):
  return vf.read_split(builder, split)


def label(builder, record, attribute):
  return builder.info.features[attribute].names[record[attribute]]


# ------------------------------------------------------------------------------------------
# Building


def test_csv_folder_labels_identity_split_and_centre_crop(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  builder = build(manual, tmp_path / "data", test_size=2, split_seed=3)
  f = builder.info.features
  assert f["image"].shape == (8, 8, 3)
  assert f["identity"].names == sorted(IDS)
  assert f["expression"].names == sorted(EXPRESSIONS)  # happy, neutral, sad: sorted as text
  train, test = records(builder, "train"), records(builder, "test")
  assert len(train) + len(test) == len(rows) and not any(r["flipped"] for r in train + test)
  test_ids = {label(builder, r, "identity") for r in test}
  train_ids = {label(builder, r, "identity") for r in train}
  assert len(test_ids) == 2 and not test_ids & train_ids and test_ids | train_ids == set(IDS)
  want = np.array(sorted(IDS))[np.random.default_rng(3).permutation(len(IDS))[:2]]
  assert sorted(test_ids) == sorted(want)
  meta = builder.info.metadata
  assert meta["test_values"] == sorted(want)
  assert meta["attributes"] == ["identity", "expression"]
  assert meta["class_names"]["expression"] == sorted(EXPRESSIONS)
  assert meta["options"]["test_size"] == 2.0 and meta["skipped_images"] == []
  by_file = {file: (i, e) for file, i, e in rows}
  for r in train + test:
    i, e = by_file[r["file_name"]]
    assert (label(builder, r, "identity"), label(builder, r, "expression")) == (i, e)
    image = r["image"].astype(int)
    # The centred square only: no magenta; top rows the identity's colour, bottom the
    # expression's (the middle rows blend the two through the Lanczos filter).
    assert np.abs(image - np.array(MAGENTA)).sum(-1).min() > 150
    assert np.abs(image[0] - np.array(colour(i))).max() <= 3
    assert np.abs(image[-1] - np.array(colour(e))).max() <= 3


def test_class_folder_layout_random_split(tmp_path):
  root = tmp_path / "in"
  counts = {"cat": 6, "dog": 5, "owl": 4}
  for c, n in counts.items():
    for k in range(n):
      paint(root / c / f"{k}.png", colour(c), colour(c), size=(16, 16))
  paint(root / "stray.png", colour("x"), colour("x"))  # not in a class folder: not used
  (root / ".hidden").mkdir()
  builder = build(root, tmp_path / "data", class_attribute="animal", test_size=0.2)
  assert builder.info.features["animal"].names == ["cat", "dog", "owl"]
  train, test = records(builder, "train"), records(builder, "test")
  assert len(test) == round(0.2 * 15) and len(train) == 15 - len(test)
  for r in train + test:
    assert label(builder, r, "animal") == r["file_name"].split("/")[0]
  assert builder.info.metadata["unlisted_files"]["first"] == ["stray.png"]
  assert "at random" in builder.info.metadata["test_split_rule"]


def test_split_column_fixes_the_split(tmp_path):
  manual, rows = make_folder(tmp_path / "in", ids=("ann", "bob", "cat"))
  lines = ["file,expression,split,identity"]
  for file, i, e in rows:
    lines.append(f"{file},{e},{'test' if i == 'bob' else 'train'},{i}")
  write_csv(manual, lines)
  builder = build(manual, tmp_path / "data")
  test = records(builder, "test")
  assert sorted(r["file_name"] for r in test) == sorted(f for f, i, _ in rows if i == "bob")
  assert "split" not in builder.info.features  # the split is not a label
  assert builder.info.features["identity"].names == ["ann", "bob", "cat"]


def test_flips_with_a_swap_table(tmp_path):
  root = tmp_path / "in"
  lines = ["file,identity,gaze"]
  for i in IDS:
    for g in ("left", "front", "right"):
      a = np.zeros((16, 16, 3), np.uint8)
      a[:, :5] = colour(i)  # left-right asymmetric
      a[:, 5:] = colour(g)
      (root / "p").mkdir(parents=True, exist_ok=True)
      Image.fromarray(a).save(root / "p" / f"{i}_{g}.png")
      lines.append(f"p/{i}_{g}.png,{i},{g}")
  write_csv(root, lines)
  builder = build(
    root, tmp_path / "data", image_size=16, test_size=1, flip=True, flip_swap=("gaze:left=right",)
  )
  train, test = records(builder, "train"), records(builder, "test")
  assert not any(r["flipped"] for r in test) and len(test) == 3
  originals = {r["file_name"]: r for r in train if not r["flipped"]}
  mirrors = {r["file_name"]: r for r in train if r["flipped"]}
  assert set(originals) == set(mirrors) and len(originals) == 12
  swap = {"left": "right", "right": "left", "front": "front"}
  for name, r in originals.items():
    m = mirrors[name]
    np.testing.assert_array_equal(m["image"], r["image"][:, ::-1])
    assert label(builder, m, "gaze") == swap[label(builder, r, "gaze")]
    assert m["identity"] == r["identity"]


@pytest.mark.parametrize("crop", ["none", "4,2,20,30"])
def test_crop_none_and_fixed_box(tmp_path, crop):
  root = tmp_path / "in"
  rng = np.random.default_rng(0)
  lines = ["file,identity"]
  originals = {}
  for i in ("a", "b"):
    a = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
    (root / f"{i}.png").parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(root / f"{i}.png")
    originals[f"{i}.png"] = a
    lines.append(f"{i}.png,{i}")
  write_csv(root, lines)
  builder = build(root, tmp_path / "data", crop=crop, test_size=1)
  box = (0, 0, 24, 32) if crop == "none" else (4, 2, 20, 30)
  for r in records(builder, "train") + records(builder, "test"):
    want = (
      Image.fromarray(originals[r["file_name"]]).crop(box).resize((8, 8), Image.Resampling.LANCZOS)
    )
    np.testing.assert_array_equal(r["image"], np.asarray(want))


def test_exif_orientation_is_applied(tmp_path):
  root = tmp_path / "in"
  root.mkdir()
  a = np.zeros((8, 16, 3), np.uint8)  # stored landscape, left half white
  a[:, :8] = 255
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90° clockwise to display": portrait, white half on top
  for i in ("a", "b"):
    Image.fromarray(a).save(root / f"{i}.png", exif=exif)
  write_csv(root, ["file,identity", "a.png,a", "b.png,b"])
  builder = build(root, tmp_path / "data", crop="none", test_size=1)
  image = records(builder, "train")[0]["image"]
  assert image[:3].min() > 200 and image[-3:].max() < 50


# ------------------------------------------------------------------------------------------
# Bad input: one message naming the file and the line (line 1 is the header).


def build_error(tmp_path, manual, error=lb.FolderDataError, **options):
  with pytest.raises(error) as e:
    build(manual, tmp_path / "data", **options)
  text = str(e.value)
  assert "\n" not in text and isinstance(e.value, errors.InputError)
  return text


def test_missing_image_is_an_error_or_skipped_and_listed(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  os.remove(manual / rows[4][0])
  text = build_error(tmp_path, manual, lb.BadImageError)
  assert f"{manual / 'labels.csv'} line 6" in text and rows[4][0] in text
  assert "does not exist" in text
  builder = build(manual, tmp_path / "data2", skip_bad_images=True)
  assert builder.info.metadata["skipped_images"] == [
    {"file_name": rows[4][0], "line": 6, "error": "no such file"}
  ]
  kept = records(builder, "train") + records(builder, "test")
  assert len(kept) == len(rows) - 1 and rows[4][0] not in {r["file_name"] for r in kept}


def test_unreadable_image_is_an_error_or_skipped_and_listed(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  (manual / rows[2][0]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  text = build_error(tmp_path, manual, lb.BadImageError)
  assert f"{manual / 'labels.csv'} line 4" in text and str(manual / rows[2][0]) in text
  assert issubclass(lb.BadImageError, vendor.BadImageError)  # the vendor builders' kind
  builder = build(manual, tmp_path / "data2", skip_bad_images=True)
  skipped = builder.info.metadata["skipped_images"]
  assert [(s["file_name"], s["line"]) for s in skipped] == [(rows[2][0], 4)]
  assert len(records(builder, "train") + records(builder, "test")) == len(rows) - 1


def test_unknown_column(tmp_path):
  manual, _ = make_folder(tmp_path / "in")
  # A modelled attribute that is not a column: refused before anything is built.
  config = folder_config(manual, tmp_path / "tfds", attributes=("identity", "emotion"))
  with pytest.raises(configuration.ConfigError) as e:
    input_pipeline.load(config)
  assert "'emotion' is not a column of" in str(e.value)
  assert str(manual / "labels.csv") in str(e.value) and "identity, expression" in str(e.value)
  assert not (tmp_path / "tfds").exists()
  # The split and the flip table name columns too.
  text = build_error(tmp_path, manual, split_by="person")
  assert "split_by='person' is not a column of labels.csv" in text
  text = build_error(tmp_path, manual, flip=True, flip_swap=("gaze:left=right",))
  assert "flip_swap names 'gaze', not a column of labels.csv" in text
  # And the header must have a file column.
  write_csv(manual, ["image_file,identity", "photos/ann_happy.png,ann"])
  text = build_error(tmp_path, manual)
  assert f"{manual / 'labels.csv'} line 1: no 'file' column" in text


def test_empty_class(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  lines = ["file,identity,expression"] + [",".join(r) for r in rows]
  lines[3] = f"{rows[2][0]},{rows[2][1]},"
  write_csv(manual, lines)
  text = build_error(tmp_path, manual)
  assert f"{manual / 'labels.csv'} line 4: the expression cell is empty" in text
  root = tmp_path / "classes"
  paint(root / "cat" / "0.png", colour("c"), colour("c"))
  paint(root / "cat" / "1.png", colour("c"), colour("c"))
  (root / "dog").mkdir()
  (root / "dog" / "notes.txt").write_text("no images here")
  text = build_error(tmp_path, root)
  assert f"the class folder {root / 'dog'} has no images" in text


def test_test_split_class_never_seen_in_training(tmp_path):
  manual, rows = make_folder(tmp_path / "in", ids=("ann", "bob", "cat"))
  lines = ["file,identity,expression,split"]
  for file, i, e in rows:
    lines.append(f"{file},{i},{e},{'test' if i == 'cat' else 'train'}")
  paint(manual / "photos/cat_angry.png", colour("cat"), colour("angry"))
  lines.append("photos/cat_angry.png,cat,angry,test")
  write_csv(manual, lines)
  text = build_error(tmp_path, manual)
  assert (
    f"{manual / 'labels.csv'} line {len(lines)}: expression 'angry' occurs only in the "
    "test split" in text
  )
  # Identities are held out on purpose: cat is only in the test split and that is fine.
  write_csv(manual, lines[:-1])
  builder = build(manual, tmp_path / "data_ok")
  assert {label(builder, r, "identity") for r in records(builder, "test")} == {"cat"}


def test_duplicate_rows(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  lines = ["file,identity,expression"] + [",".join(r) for r in rows]
  lines.append(f"./{rows[1][0]},{rows[1][1]},sad")  # the same file, written differently
  write_csv(manual, lines)
  text = build_error(tmp_path, manual)
  assert (
    f"{manual / 'labels.csv'} line {len(lines)}: the file {rows[1][0]} is listed again "
    "(first on line 3)" in text
  )


def test_non_utf8_text(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  lines = ["file,identity,expression"] + [",".join(r) for r in rows]
  data = ("\n".join(lines[:5]) + "\n").encode() + "photos/x.png,zoë,happy\n".encode("latin-1")
  (manual / "labels.csv").write_bytes(data)
  text = build_error(tmp_path, manual)
  assert f"{manual / 'labels.csv'} line 6 is not UTF-8 text (byte 0xeb" in text
  # A UTF-8 file (with the BOM spreadsheet programs write) is read, accents and all.
  paint(manual / "photos/x.png", colour("zoë"), colour("happy"))
  (manual / "labels.csv").write_bytes(
    b"\xef\xbb\xbf" + ("\n".join(lines + ["photos/x.png,zoë,happy"]) + "\n").encode()
  )
  builder = build(manual, tmp_path / "data_ok")
  assert "zoë" in builder.info.features["identity"].names


def test_other_table_errors_name_the_line(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  base = ["file,identity,expression"] + [",".join(r) for r in rows]
  cases = [
    (base[:3] + [f"{rows[2][0]},ann"] + base[4:], "line 4 has 2 cells; the header has 3"),
    (
      base[:2] + ["../outside.png,ann,sad"] + base[3:],
      "line 3: the file '../outside.png' is outside the folder",
    ),
    (["file,identity,identity"] + base[1:], "line 1: the column 'identity' appears twice"),
    (["file,image,expression"] + base[1:], "line 1: the column name 'image' is reserved"),
    (base[:2] + [f"{rows[1][0]},ann,happy,"] + base[3:], "line 3 has 4 cells"),
  ]
  for lines, want in cases:
    write_csv(manual, lines)
    text = build_error(tmp_path, manual)
    assert f"{manual / 'labels.csv'} {want}" in text, text


def test_bad_input_through_run_train_is_one_error_line(tmp_path):
  manual, rows = make_folder(tmp_path / "in")
  lines = ["file,identity,expression"] + [",".join(r) for r in rows] + [",".join(rows[0])]
  write_csv(manual, lines)
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "run_train.py"),
      f"--config={ROOT / 'configs' / 'folder.py'}",
      f"--workdir={tmp_path / 'w'}",
      f"--config.dataset.manual_dir={manual}",
      f"--config.dataset.data_dir={tmp_path / 'tfds'}",
      "--config.dataset.attributes=expression,identity",
      "--config.image_size=16",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
  )
  assert proc.returncode == errors.EXIT_ERROR, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: labelled_images: ") and "is listed again" in last
  assert f"line {len(lines)}" in last and str(manual / "labels.csv") in last


# ------------------------------------------------------------------------------------------
# The config, the prepared dataset's name, and the command-line overrides


def folder_config(manual, data_dir, attributes=("identity", "expression"), **folder):
  from tiny import tiny_config  # pylint: disable=g-import-not-at-top

  config = tiny_config(attributes=attributes)
  defaults = load_config_file([])
  config.dataset = defaults.dataset
  config.dataset.manual_dir = str(manual)
  config.dataset.data_dir = str(data_dir)
  config.dataset.attributes = tuple(attributes)
  config.dataset.num_workers = 0
  config.dataset.folder.image_size = 16
  for k, v in folder.items():
    config.dataset.folder[k] = v
  return config


def load_config_file(overrides):
  argv = ["prog", f"--config={ROOT / 'configs' / 'folder.py'}"] + list(overrides)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
  )
  fv(argv)
  config = fv.config
  config.unlock()
  return config


def test_documented_overrides_parse_as_written():
  c = load_config_file(
    [
      "--config.dataset.manual_dir=/data/mine",
      "--config.dataset.attributes=expression,identity",
      "--config.image_size=64",
      "--config.dataset.folder.flip=True",
      "--config.dataset.folder.flip_swap=gaze:left=right,pose:045=135",
      "--config.dataset.folder.crop=10,20,110,120",
      "--config.model.encoder_widths=16,32,128",
    ]
  )
  assert c.dataset.attributes == ("expression", "identity")
  assert c.image_size == 64 and c.dataset.folder.image_size == 64  # stored at the model's size
  assert c.dataset.folder.flip_swap == ("gaze:left=right", "pose:045=135")
  assert c.dataset.folder.crop == "10,20,110,120"
  assert c.model.encoder_widths == (16, 32, 128)
  configuration.validate(c)
  builder_config, _ = lb.config_from_dataset(c.dataset)
  assert builder_config.crop == "10,20,110,120" and builder_config.image_size == 64


def test_comma_words():
  assert tuple_flags.comma_words("expression,identity") == ("expression", "identity")
  assert tuple_flags.comma_words("expression, identity,") == ("expression", "identity")
  assert tuple_flags.comma_words("expression") is None  # ml_collections: ('expression',)
  assert tuple_flags.comma_words("1,2,3") is None  # a literal tuple of ints
  assert tuple_flags.comma_words("('a','b')") is None
  assert tuple_flags.comma_words("a,,b") is None
  parser = tuple_flags.CommaTupleParser()
  assert parser.parse("a,b") == ("a", "b") and parser.parse("(1, 2)") == (1, 2)
  assert parser.parse("a") == ("a",)


def test_prepared_dataset_names():
  c = load_config_file([])
  config, skip = lb.config_from_dataset(c.dataset)
  assert config is lb.Builder.BUILDER_CONFIGS[0] and not skip  # every option at its default
  c.dataset.folder.crop = "none"
  first, _ = lb.config_from_dataset(c.dataset)
  c.dataset.folder.test_size = 3
  second, _ = lb.config_from_dataset(c.dataset)
  assert first.name.startswith("128px_") and second.name.startswith("128px_")
  assert first.name != second.name
  c.dataset.folder.test_size = 3.0  # the same option
  assert lb.config_from_dataset(c.dataset)[0].name == second.name
  c.dataset.builder_config = "mine"
  assert lb.config_from_dataset(c.dataset)[0].name == "mine"
  for field, value, want in [
    ("crop", "center,1", "config.dataset.folder.crop='center,1'"),
    ("test_size", 1.5, "config.dataset.folder.test_size=1.5"),
    ("flip_swap", ("gaze:left",), "flip_swap entry 'gaze:left'"),
  ]:
    c = load_config_file([])
    c.dataset.folder[field] = value
    with pytest.raises(configuration.ConfigError, match=want.replace("(", r"\(")):
      lb.config_from_dataset(c.dataset)


def test_prepared_data_follows_its_folder(tmp_path, caplog):
  manual, rows = make_folder(tmp_path / "in")
  config = folder_config(manual, tmp_path / "tfds")
  builder, info = input_pipeline.load(config)
  assert info.name == "labelled_images" and info.num_train + info.num_test == len(rows)
  assert info.stored_image_size == 16
  assert builder.info.metadata["source"]["folder"] == str(manual.resolve())
  # The folder changed: a warning, the prepared data is still used (a model trained on it
  # is evaluated on it).
  os.remove(manual / rows[0][0])
  write_csv(manual, ["file,identity,expression"] + [",".join(r) for r in rows[1:]])
  with caplog.at_level(logging.WARNING, logger="absl"):
    _, again = input_pipeline.load(config)
  assert again.num_train + again.num_test == len(rows)
  assert any("has changed since the dataset" in r.getMessage() for r in caplog.records)
  # Another folder under the same options and data_dir: an error.
  other, _ = make_folder(tmp_path / "other", ids=("zed", "yan"))
  config.dataset.manual_dir = str(other)
  with pytest.raises(lb.FolderDataError, match="was prepared from .* not from"):
    input_pipeline.load(config)
  config.dataset.builder_config = "other"  # its own name: prepared beside the first
  _, third = input_pipeline.load(config)
  assert third.num_train + third.num_test == 6
  # A name already used by other options: an error naming the difference.
  config.dataset.folder.crop = "none"
  with pytest.raises(lb.FolderDataError, match="crop='center' \\(asked: 'none'\\)"):
    input_pipeline.load(config)


# ------------------------------------------------------------------------------------------
# The documented commands, end to end, on the worked example's folder


def test_example_command_writes_the_folder(tmp_path, capsys):
  assert (
    cli.call(
      example.main,
      example.FLAGS,
      [str(tmp_path / "faces"), "--identities=2", "--size=16"],
      positional=True,
    )
    == 0
  )
  assert "Wrote 30 images" in capsys.readouterr().out
  with open(tmp_path / "faces" / "labels.csv", encoding="utf-8") as f:
    rows = [line.strip().split(",") for line in f]
  assert rows[0] == ["file", "identity", "expression", "gaze"] and len(rows) == 31
  for file, identity, expression, gaze in rows[1:]:
    assert file == f"photos/{identity}_{expression}_{gaze}.png"
    assert Image.open(tmp_path / "faces" / file).size == (16, 16 + 2 * (16 // 6))
  assert {r[2] for r in rows[1:]} == set(example.EXPRESSIONS) and "neutral" in example.EXPRESSIONS


TINY = [
  "--config.image_size=16",
  "--config.batch_size=8",
  "--config.num_train_steps=4",
  "--config.log_every_steps=2",
  "--config.checkpoint_every_steps=2",
  "--config.sample_every_steps=2",
  "--config.num_sample_images=4",
  "--config.dataset.num_workers=0",
  "--config.model.encoder_widths=4,8,8",
  "--config.model.num_res_blocks=1",
  "--config.model.decoder_up_widths=8,4",
  "--config.model.critic_base_width=4",
  "--config.model.classifier_widths=4,8",
]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
  """The worked example: the generated folder, then run_train.py as the docs write it (with a
  tiny model), identities held out two at a time, mirrored training images."""
  tmp = tmp_path_factory.mktemp("folder_run")
  faces = example.make_example(tmp / "faces", num_identities=5, size=32)
  workdir, data_dir = tmp / "w", tmp / "tfds"
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "run_train.py"),
      f"--config={ROOT / 'configs' / 'folder.py'}",
      f"--workdir={workdir}",
      f"--config.dataset.manual_dir={faces}",
      "--config.dataset.attributes=expression,identity",
      f"--config.dataset.data_dir={data_dir}",
      "--config.dataset.folder.test_size=2",
      "--config.dataset.folder.flip=True",
      "--config.dataset.folder.flip_swap=gaze:left=right",
    ]
    + TINY,
    capture_output=True,
    text=True,
    timeout=900,
    cwd=ROOT,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(faces=faces, workdir=str(workdir), stdout=proc.stdout)


def test_example_folder_trains(example_run):
  assert "step 4/4" in example_run["stdout"]
  w = pathlib.Path(example_run["workdir"])
  assert (w / "samples" / "step_0000004.png").exists()
  trained = checkpoints.load_trained(str(w))
  assert trained.config.dataset.attributes == ("expression", "identity")
  builder, info = input_pipeline.load(trained.config)
  assert info.class_names[0] == ("anger", "neutral", "sadness", "smile", "surprise")
  assert info.num_classes == (5, 5)
  assert (info.num_train, info.num_test) == (3 * 15 * 2, 2 * 15)  # + mirrors; 2 held out
  with open(pathlib.Path(example_run["faces"]) / "labels.csv") as f:
    assert f.readline().strip() == "file,identity,expression,gaze"


def test_example_folder_samples(example_run, tmp_path, capsys):
  w = example_run["workdir"]
  out = tmp_path / "transfer.png"
  rc = cli.call(
    sample.main,
    sample.FLAGS,
    [
      f"--workdir={w}",
      "--mode=transfer",
      "--source=split:test[:2]",
      "--target=split:test[2:5]",
      "--attributes=expression",
      f"--out={out}",
      "--batch_size=8",
    ],
  )
  assert rc == 0, capsys.readouterr().err
  assert Image.open(out).size == (4 * 16 + 5 * 2, 3 * 16 + 4 * 2)
  # Your own photo goes through the dataset's crop: a picture of the folder as --source is the
  # same model input as its record in the dataset.
  trained = checkpoints.load_trained(w)
  builder = input_pipeline.get_builder(trained.config.dataset)
  source = builder.as_data_source("test")
  record = source[0]
  photo = example_run["faces"] / record["file_name"].decode()
  mine = image_io.load_source([str(photo)], trained.config)
  np.testing.assert_array_equal(mine.images[0], input_pipeline.to_model_image(record["image"], 16))
  out = tmp_path / "label.png"
  rc = cli.call(
    sample.main,
    sample.FLAGS,
    [
      f"--workdir={w}",
      "--mode=label",
      f"--source={photo}",
      "--attributes=expression",
      f"--out={out}",
      "--batch_size=8",
    ],
  )
  assert rc == 0, capsys.readouterr().err
  meta = json.loads(out.with_suffix(".json").read_text())
  assert len(meta["cells"]) == 1 + 5  # the photo, then each expression


def test_example_folder_evaluates(example_run, tmp_path):
  w = example_run["workdir"]
  out = tmp_path / "eval.json"
  rc = cli.call(
    ev.main,
    ev.FLAGS,
    [
      f"--workdir={w}",
      "--classifier_steps=3",
      "--num_pairs=8",
      "--hopkins_draws=2",
      "--batch_size=8",
      f"--out={out}",
    ],
  )
  assert rc == 0
  result = json.loads(out.read_text())
  m = result["metrics"]
  for key in (
    "recon/psnr",
    "entropy/C_expression/z_identity",
    "synthesis/acc_mean",
    "eval_classifier/expression/acc",
    "hopkins/expression/mean",
  ):
    assert key in m and np.isfinite(m[key]), key
  assert not any(k.startswith("gt/") for k in m)  # no ground truth for a folder


def test_example_folder_kid_beside_fid(example_run):
  """The evaluator reports KID from the features it gives FID (a stand-in extractor here; the
  Inception network itself is tested in test_fid.py)."""
  trained = checkpoints.load_trained(example_run["workdir"])
  seen = []

  def features(images, value_range=(0.0, 1.0)):
    seen.append(np.asarray(images))
    return np.asarray(images, np.float64).reshape(len(images), -1)[:, :9]

  opts = context.Options(
    classifier_steps=3, batch_size=8, write_images=False, fid_weights="stand-in", seed=4
  )
  ctx = context.Context(
    trained, example_run["workdir"], opts, progress=lambda s: None, inception=features
  )
  m = synthesis.synthesis(ctx)
  translated, real = np.concatenate(seen[:-1]), seen[-1]
  np.testing.assert_allclose(real, networks.to_float(ctx.test.images))
  want = fid.kid_from_features(features(translated), features(real), seed=4)
  assert m["synthesis/kid"] == pytest.approx(want.kid, rel=1e-12)
  assert m["synthesis/kid_std"] == pytest.approx(want.std, rel=1e-12)
  assert m["synthesis/fid"] == pytest.approx(
    fid.fid_from_features(features(translated), features(real)), rel=1e-9
  )

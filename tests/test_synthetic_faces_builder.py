"""The synthetic_faces TFDS builder: configs, features, splits, round trips, determinism."""

import collections
import importlib
import importlib.util
import pathlib
import sys

import numpy as np
from PIL import Image
import pytest


def _builder_module():
  """attrdis_datasets.synthetic_faces...; before `pip install -e .`, from datasets/."""
  if importlib.util.find_spec("attrdis_datasets") is None:
    root = pathlib.Path(__file__).resolve().parents[1] / "datasets"
    spec = importlib.util.spec_from_file_location(
      "attrdis_datasets", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["attrdis_datasets"] = module
    spec.loader.exec_module(module)
  return importlib.import_module("attrdis_datasets.synthetic_faces.synthetic_faces_dataset_builder")


sf = _builder_module()

from attrdis.synthetic import design as design_lib  # noqa: E402
from attrdis.synthetic import render  # noqa: E402
from attrdis.synthetic.factors import factors_from_record  # noqa: E402

LABELS = ("identity", "expression", "illumination", "gaze", "color")


def _build(path):
  builder = sf.Builder(config="tiny", data_dir=str(path), file_format="array_record")
  builder.download_and_prepare()
  return builder


def _records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _signature(record):
  """Everything stored but the image, hashable."""
  return (
    tuple(int(record[k]) for k in LABELS)
    + (float(record["intensity"]),)
    + tuple(np.asarray(record["identity_params"]).tolist())
  )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  builder = _build(tmp_path_factory.mktemp("synthetic_faces"))
  return builder, {s: _records(builder, s) for s in ("train", "test")}


def test_images_are_stored_raw(tiny):
  import vendor_fixtures  # pylint: disable=g-import-not-at-top

  builder, _ = tiny
  vendor_fixtures.assert_images_stored_raw(builder, "test")


def test_configs(tmp_path):
  configs = sf.Builder.BUILDER_CONFIGS
  assert [c.name for c in configs] == ["64px", "32px", "128px", "tiny"]
  assert sf.Builder.name == "synthetic_faces"
  assert [c.image_size for c in configs] == [64, 32, 128, 16]
  big = [
    (c.num_train_identities, c.num_test_identities, c.intensity_levels, c.repeats)
    for c in configs[:3]
  ]
  assert big[0] == big[1] == big[2] == (100, 20, 4, 2)  # same content at every size
  assert configs[0].design.num_images("train") == 4000
  assert configs[0].design.num_images("test") == 800
  assert sf.Builder(data_dir=str(tmp_path)).builder_config.name == "64px"  # the default
  tiny = sf.Builder(config="tiny", data_dir=str(tmp_path)).builder_config
  assert isinstance(tiny, sf.SyntheticFacesConfig)
  assert (tiny.image_size, tiny.num_train_identities, tiny.num_test_identities) == (16, 4, 2)


def test_features(tiny):
  builder, _ = tiny
  f = builder.info.features
  assert f["image"].shape == (16, 16, 3)
  assert f["identity"].names == ["id0000", "id0001", "id0002", "id0003", "id0004", "id0005"]
  assert f["expression"].names == ["neutral", "smile", "surprise", "anger", "sadness"]
  assert f["illumination"].names == ["front", "left", "right", "top", "bottom"]
  assert f["gaze"].names == ["left", "centre", "right"]
  assert f["color"].names == ["none", "red", "green", "blue"]
  assert f["intensity"].np_dtype == np.float32 and f["intensity"].shape == ()
  assert f["identity_params"].np_dtype == np.float32
  assert f["identity_params"].shape == (25,)


def test_splits_are_disjoint_in_identity_and_labels_round_trip(tiny):
  builder, records = tiny
  assert builder.info.splits["train"].num_examples == 40
  assert builder.info.splits["test"].num_examples == 20
  ids = {s: {int(r["identity"]) for r in records[s]} for s in records}
  assert ids["train"] == {0, 1, 2, 3} and ids["test"] == {4, 5}
  # Every record is one planned example, with its labels (records come back in hashed
  # order, so compare multisets of the stored factors).
  d = builder.builder_config.design
  for split in ("train", "test"):
    expected = collections.Counter(
      (i, f.expression, f.illumination, f.gaze, f.color, f.intensity) + tuple(f.identity.tolist())
      for _, i, f in d.examples(split)
    )
    got = collections.Counter(_signature(r) for r in records[split])
    assert got == expected
    for r in records[split]:
      assert np.array_equal(r["identity_params"], d.identity(int(r["identity"])))
      assert r["image"].shape == (16, 16, 3) and r["image"].dtype == np.uint8


def test_records_re_render_exactly_from_their_stored_factors(tiny):
  _, records = tiny
  for split in ("train", "test"):
    rs = records[split]
    images = render.render_batch([factors_from_record(r) for r in rs], 16)
    for r, img in zip(rs, images):
      assert np.array_equal(r["image"], img)
  # and a transfer's ground truth between two records is the matching re-rendering
  s, t = factors_from_record(records["test"][0]), factors_from_record(records["train"][3])
  gt = render.transfer_ground_truth(s, t, ["identity"], 16)
  assert np.array_equal(gt, render.render(s.replace(identity=t.identity), 16))


def test_every_factor_varies_within_each_identity(tiny):
  _, records = tiny
  by_id = collections.defaultdict(list)
  for r in records["train"] + records["test"]:
    by_id[int(r["identity"])].append(r)
  for rs in by_id.values():
    assert len(rs) == 10
    for name, n in (("expression", 5), ("illumination", 5), ("gaze", 3), ("color", 4)):
      counts = collections.Counter(int(r[name]) for r in rs)
      assert set(counts) == set(range(n)), name
      assert max(counts.values()) - min(counts.values()) <= 1, name
    assert sorted({float(r["intensity"]) for r in rs}) == [0.0, 0.5, 1.0]
    for r in rs:
      assert (float(r["intensity"]) == 0.0) == (int(r["expression"]) == 0)


def test_same_config_builds_the_same_records(tiny, tmp_path):
  _, records = tiny
  again = _build(tmp_path)
  for split in ("train", "test"):
    a = sorted((_signature(r), r["image"].tobytes()) for r in records[split])
    b = sorted((_signature(r), r["image"].tobytes()) for r in _records(again, split))
    assert a == b


def test_default_design_is_balanced_and_factorial():
  _, d = design_lib.CONFIGS["64px"]
  examples = [f for split in ("train", "test") for _, _, f in d.examples(split)]
  assert len(examples) == 4800
  counts = {
    name: collections.Counter(getattr(f, name) for f in examples)
    for name in ("expression", "illumination", "gaze", "color")
  }
  assert counts["expression"] == {e: 960 for e in range(5)}
  assert counts["illumination"] == {l: 960 for l in range(5)}
  assert counts["color"] == {c: 1200 for c in range(4)}
  assert counts["gaze"] == {0: 1600, 1: 1600, 2: 1600}
  levels = collections.Counter(f.intensity for f in examples if f.expression != 0)
  assert levels == {0.25: 960, 0.5: 960, 0.75: 960, 1.0: 960}
  assert d.intensities() == (0.25, 0.5, 0.75, 1.0)
  # illumination is not tied to expression: every pair occurs, none dominates
  pairs = collections.Counter((f.expression, f.illumination) for f in examples)
  assert len(pairs) == 25 and max(pairs.values()) < 1.5 * min(pairs.values())
  # same identities in every size, different from another seed's
  assert np.array_equal(design_lib.CONFIGS["32px"][1].identity(7), d.identity(7))
  other = design_lib.Design(100, 20, 4, 2, seed=1)
  assert not np.array_equal(other.identity(7), d.identity(7))


def test_preprocess_image():
  # 60 wide x 40 high: a 40x40 red square in the middle, blue 10 px bands on both sides.
  a = np.zeros((40, 60, 4), np.uint8)
  a[..., 3] = 255
  a[:, :10, 2] = 255
  a[:, 50:, 2] = 255
  a[:, 10:50, 0] = 255
  out = sf.preprocess_image(Image.fromarray(a, "RGBA"), 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  assert np.all(out[..., 0] == 255) and np.all(out[..., 2] == 0)
  # antialiased downscaling of a fine checkerboard gives mid grey, not aliasing
  board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
  small = sf.preprocess_image(Image.fromarray(board, "L"), 16)
  assert small.shape == (16, 16, 3)
  assert np.all(np.abs(small[2:-2, 2:-2].astype(int) - 128) < 12)
  # upscaling a tall image crops its centre
  tall = np.zeros((30, 10, 3), np.uint8)
  tall[10:20] = 200
  up = sf.preprocess_image(Image.fromarray(tall), 20)
  assert up.shape == (20, 20, 3) and up.min() >= 190

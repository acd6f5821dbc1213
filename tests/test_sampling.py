"""attrdis.sampling and attrdis.image_io on a tiny model trained for 2 steps on synthetic faces.

The checks are identities that hold for any trained generator: transferring nothing is the
reconstruction, transferring every code is the target's reconstruction, interpolation and
mixtures reduce to their endpoints, class-mean codes are the means of the encoded images.
"""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from attrdis import checkpoints
from attrdis import image_io
from attrdis import images
from attrdis import input_pipeline
from attrdis import sampling
from attrdis import train
from tiny import tiny_config

# This module and test_sample_cli.py share the trained workdir: one xdist worker runs both.
pytestmark = pytest.mark.xdist_group("sampling_workdir")

ATOL = 2e-5  # the same codes decoded in different batches: equal up to float rounding
BATCH = 8  # one batch size everywhere, so that compilations are shared


_TRAINED: dict[str, str] = {}  # data dir -> workdir, for this process


@pytest.fixture(scope="session")
def sampling_workdir(synthetic_data_dir, tmp_path_factory):
  """A tiny model (identity, expression, illumination) trained for 2 steps; its workdir.

  test_sample_cli.py imports this fixture, which pytest then registers a second time for
  that module; the memo makes both share one training per process.
  """
  if synthetic_data_dir not in _TRAINED:
    config = tiny_config(attributes=("identity", "expression", "illumination"))
    config.dataset.data_dir = synthetic_data_dir
    config.num_train_steps = 2
    workdir = str(tmp_path_factory.mktemp("sampling_workdir"))
    train.train_and_evaluate(config, workdir)
    _TRAINED[synthetic_data_dir] = workdir
  return _TRAINED[synthetic_data_dir]


@pytest.fixture(scope="module")
def env(sampling_workdir):
  trained = checkpoints.load_trained(sampling_workdir)
  builder, info = input_pipeline.load(trained.config)
  sampler = sampling.Sampler.from_trained(trained, batch_size=BATCH)
  test = image_io.load_split(builder, "test[:5]", trained.config)
  return dict(
    trained=trained,
    builder=builder,
    info=info,
    sampler=sampler,
    test=test,
    workdir=sampling_workdir,
  )


def direct_decode(env, codes):
  """The reference: codes built explicitly (with the pure functions) and decoded as they are."""
  return env["sampler"].decode(codes)


def direct_encode(env, x):
  return [np.asarray(z[: len(x)]) for z in env["sampler"].encode(x)]


# ----------------------------------------------------------------------------------------
# Transfer.


def test_transfer_nothing_is_reconstruction_and_everything_is_the_target(env):
  s, x = env["sampler"], env["test"].images
  src, tgt = x[:2], x[2:5]
  rec_src, rec_tgt = s.reconstruct(src), s.reconstruct(tgt)

  nothing = s.transfer(src, tgt, [])
  assert nothing.images.shape == (2, 3, 16, 16, 3)
  np.testing.assert_allclose(
    nothing.images, np.broadcast_to(rec_src[:, None], (2, 3, 16, 16, 3)), atol=ATOL
  )

  everything = s.transfer(src, tgt, [0, 1, 2, 3])  # identity, expression, illumination, rest
  np.testing.assert_allclose(
    everything.images, np.broadcast_to(rec_tgt[None], (2, 3, 16, 16, 3)), atol=ATOL
  )
  assert everything.recipes[1][2] == tuple(((("target", 2, 1.0),),) * 4)


def test_transfer_one_attribute_takes_that_code_from_the_target(env):
  s, x = env["sampler"], env["test"].images
  src, tgt = x[:2], x[2:5]
  out = s.transfer(src, tgt, [1])  # expression
  cs, ct = direct_encode(env, src), direct_encode(env, tgt)
  for i in range(2):
    for j in range(3):
      want = direct_decode(
        env, sampling.transfer_codes([z[i : i + 1] for z in cs], [z[j : j + 1] for z in ct], [1])
      )[0]
      np.testing.assert_allclose(out.images[i, j], want, atol=ATOL)
  assert out.recipes[0][1] == (
    (("source", 0, 1.0),),
    (("target", 1, 1.0),),
    (("source", 0, 1.0),),
    (("source", 0, 1.0),),
  )
  # The transferred code matters: the result is neither reconstruction.
  rec = s.reconstruct(x[:5])
  assert np.abs(out.images[0, 0] - rec[0]).max() > 1e-3
  assert np.abs(out.images[0, 0] - rec[2]).max() > 1e-3


# ----------------------------------------------------------------------------------------
# Interpolation (Eq. 12).


def test_interpolation_endpoints_and_midpoint(env):
  s, x = env["sampler"], env["test"].images
  src, tgt = x[:2], x[2:4]
  out = s.interpolate(src, tgt, [1, 2], steps=3)
  assert out.images.shape == (2, 3, 16, 16, 3)
  np.testing.assert_allclose(out.images[:, 0], s.reconstruct(src), atol=ATOL)
  ends = s.transfer(src, tgt, [1, 2]).images
  np.testing.assert_allclose(out.images[:, 2], ends[[0, 1], [0, 1]], atol=ATOL)
  cs, ct = direct_encode(env, src), direct_encode(env, tgt)
  mid = direct_decode(env, sampling.interpolate_codes(cs, ct, [1, 2], 0.5))
  np.testing.assert_allclose(out.images[:, 1], mid, atol=ATOL)
  assert out.recipes[1][1][1] == (("source", 1, 0.5), ("target", 1, 0.5))
  assert np.abs(out.images[:, 1] - out.images[:, 0]).max() > 1e-3


def test_interpolation_onto_a_third_image_and_pairing(env):
  s, x = env["sampler"], env["test"].images
  src, tgt, onto = x[:2], x[2:3], x[4:5]  # one target for both sources
  out = s.interpolate(src, tgt, [1], steps=4, onto=onto)
  assert out.images.shape == (2, 4, 16, 16, 3)
  start = s.transfer(onto, src, [1]).images[0]  # onto's codes, each source's expression
  end = s.transfer(onto, tgt, [1]).images[0, 0]
  np.testing.assert_allclose(out.images[:, 0], start, atol=ATOL)
  np.testing.assert_allclose(out.images[:, 3], np.broadcast_to(end, (2, 16, 16, 3)), atol=ATOL)
  assert out.recipes[0][0][0] == (("onto", 0, 1.0),)
  with pytest.raises(sampling.SamplingError, match="2 sources and 3 targets"):
    s.interpolate(x[:2], x[2:5], [1], steps=3)
  with pytest.raises(sampling.SamplingError, match="at least 2"):
    s.interpolate(src, tgt, [1], steps=1)


# ----------------------------------------------------------------------------------------
# Mixtures (Eq. 11).


def test_mixture_weights(env):
  s, x = env["sampler"], env["test"].images
  imgs = x[:3]
  w = [[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.5]]
  out = s.mix(imgs, 0, w)  # identity
  assert out.images.shape == (3, 16, 16, 3)
  np.testing.assert_allclose(out.images[0], s.reconstruct(imgs)[0], atol=ATOL)
  np.testing.assert_allclose(
    out.images[1], s.transfer(imgs[:1], imgs[1:2], [0]).images[0, 0], atol=ATOL
  )
  want = direct_decode(env, sampling.mix_codes(direct_encode(env, imgs), 0, w[2]))[0]
  np.testing.assert_allclose(out.images[2], want, atol=ATOL)
  assert out.recipes[2][0] == (("source", 0, 0.2), ("source", 1, 0.3), ("source", 2, 0.5))
  assert out.recipes[2][1] == (("source", 0, 1.0),)


def test_check_weights():
  np.testing.assert_allclose(sampling.check_weights([0.333, 0.333, 0.334], 3).sum(), 1.0, rtol=1e-6)
  with pytest.raises(sampling.SamplingError, match="sum to 1"):
    sampling.check_weights([0.5, 0.2, 0.2], 3)
  with pytest.raises(sampling.SamplingError, match="negative"):
    sampling.check_weights([1.5, -0.5, 0.0], 3)
  with pytest.raises(sampling.SamplingError, match="2 weights given for 3 images"):
    sampling.check_weights([0.5, 0.5], 3)
  w = sampling.random_convex_weights(3, 50, seed=1)
  assert w.shape == (50, 3) and np.all(w > 0)
  np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(w, sampling.random_convex_weights(3, 50, seed=1))
  assert not np.allclose(w, sampling.random_convex_weights(3, 50, seed=2))


def test_attribute_indices():
  attrs = ("identity", "expression", "illumination")
  assert sampling.attribute_indices(["illumination", "rest", "identity"], attrs) == [2, 3, 0]
  with pytest.raises(
    sampling.SamplingError,
    match="'gaze' is not one of this model's: identity, expression, illumination, rest",
  ):
    sampling.attribute_indices(["gaze"], attrs)
  with pytest.raises(sampling.SamplingError, match="'rest'"):
    sampling.attribute_indices(["rest"], attrs, allow_rest=False)
  with pytest.raises(sampling.SamplingError, match="twice"):
    sampling.attribute_indices(["expression", "expression"], attrs)


# ----------------------------------------------------------------------------------------
# Class-mean codes, label-conditioned transfer, random recombination.


def test_mean_codes_are_class_means_of_the_training_codes(env):
  trained, builder, s = env["trained"], env["builder"], env["sampler"]
  means, counts = sampling.mean_codes(trained, builder, 0, batch_size=16, return_counts=True)
  train_split = image_io.load_split(builder, "train", trained.config)
  codes = np.asarray(s.encode(train_split.images)[0][: len(train_split)])
  labels = train_split.labels[:, 0]
  num_ids = env["info"].num_classes[0]
  assert means.shape == (num_ids,) + codes.shape[1:]
  np.testing.assert_array_equal(counts, np.bincount(labels, minlength=num_ids))
  for c in range(num_ids):
    if counts[c]:
      np.testing.assert_allclose(means[c], codes[labels == c].mean(axis=0), atol=1e-5)
    else:  # test identities never appear in training
      assert np.all(np.isnan(means[c]))
  assert (counts == 0).any() and (counts > 0).sum() >= 2
  with pytest.raises(sampling.SamplingError, match="rest has no classes"):
    sampling.mean_codes(trained, builder, 3)


def test_mean_codes_cache(env, tmp_path):
  trained, builder = env["trained"], env["builder"]
  calls = []

  def counting(*args, **kwargs):
    calls.append(args[2])
    return sampling.mean_codes(*args, **kwargs)

  workdir = str(tmp_path)
  first = sampling.load_or_compute_mean_codes(
    workdir, trained, builder, 1, batch_size=16, compute=counting
  )
  assert calls == [1]
  path = os.path.join(workdir, "mean_codes", f"step_{trained.step}.npz")
  with np.load(path) as f:
    assert {"expression", "expression.counts", "expression.key"} <= set(f.files)
    np.testing.assert_array_equal(f["expression"], first)
  again = sampling.load_or_compute_mean_codes(
    workdir, trained, builder, 1, batch_size=16, compute=counting
  )
  assert calls == [1]
  np.testing.assert_array_equal(again, first)
  # Another attribute goes into the same file, keeping the first.
  sampling.load_or_compute_mean_codes(workdir, trained, builder, 2, batch_size=16, compute=counting)
  assert calls == [1, 2]
  with np.load(path) as f:
    assert {"expression", "illumination"} <= set(f.files)
  # Changed encoder params (a retrained workdir, same step): recomputed, and different.
  params = jax.tree.map(lambda a: a, trained.params)
  params["gen"]["encoders_1"] = jax.tree.map(lambda a: a * 1.5, params["gen"]["encoders_1"])
  changed = checkpoints.Trained(trained.config, trained.models, params, trained.step)
  third = sampling.load_or_compute_mean_codes(
    workdir, changed, builder, 1, batch_size=16, compute=counting
  )
  assert calls == [1, 2, 1]
  assert not np.allclose(third, first)


def test_to_classes_and_recombine(env):
  s, trained, x = env["sampler"], env["trained"], env["test"].images
  means = sampling.mean_codes(trained, env["builder"], 1, batch_size=16)  # expression
  out = s.to_classes(x[:2], 1, means, [0, 3])
  assert out.images.shape == (2, 2, 16, 16, 3)
  codes = direct_encode(env, x[1:2])
  codes[1] = means[3][None]
  np.testing.assert_allclose(out.images[1, 1], direct_decode(env, codes)[0], atol=ATOL)
  assert out.recipes[1][1][1] == (("class", 3, 1.0),)
  nan_means = means.copy()
  nan_means[2] = np.nan
  with pytest.raises(sampling.SamplingError, match=r"\[2\] have no mean code"):
    s.to_classes(x[:2], 1, nan_means, [0, 2])

  donors = sampling.random_donors(5, 6, 4, seed=0)
  assert donors.shape == (6, 4)
  assert all(len(set(row)) == 4 for row in donors.tolist())  # a different image per code
  np.testing.assert_array_equal(donors, sampling.random_donors(5, 6, 4, seed=0))
  out = s.recombine(x, donors)
  cs = direct_encode(env, x)
  for r in (0, 5):
    want = direct_decode(env, [cs[m][donors[r, m]][None] for m in range(4)])[0]
    np.testing.assert_allclose(out.images[r], want, atol=ATOL)


def test_training_monitor_agrees_with_the_sampler(env):
  """train.py's sample grid (sampling.monitoring_rows, at step 2): its reconstructions and
  its identity transfers (each input with its predecessor's identity) are the sampler's."""
  grid = np.asarray(Image.open(os.path.join(env["workdir"], "samples", "step_0000002.png")))
  x, s = env["test"].images[:4], env["sampler"]

  def tile(r, c):
    return grid[2 + r * 18 : 2 + r * 18 + 16, 2 + c * 18 : 2 + c * 18 + 16].astype(int)

  rec = images.to_uint8(s.reconstruct(x)).astype(int)
  moved = images.to_uint8(s.transfer(x, x, [0]).images).astype(int)
  for c in range(4):
    assert np.abs(tile(2, c) - rec[c]).max() <= 1
    assert np.abs(tile(3, c) - moved[c, (c - 1) % 4]).max() <= 1
  assert np.abs(tile(3, 1) - rec[1]).max() > 1


# ----------------------------------------------------------------------------------------
# image_io.


def test_user_images_get_the_datasets_preprocessing(env, tmp_path):
  config, builder = env["trained"].config, env["builder"]
  split = env["test"]
  # A test image written as a file reads back as the split gives it.
  Image.fromarray(input_pipeline.decode_image(builder.as_data_source("test")[1]["image"])).save(
    tmp_path / "b.png"
  )
  np.testing.assert_array_equal(
    image_io.load_image(str(tmp_path / "b.png"), config), split.images[1]
  )
  # A larger, non-square photo: the synthetic builder's centre crop, then the resize.
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
  Image.fromarray(photo).save(tmp_path / "a.jpg", quality=100)
  got = image_io.load_image(str(tmp_path / "a.jpg"), config)
  with Image.open(tmp_path / "a.jpg") as im:
    ref = np.asarray(im.convert("RGB").crop((8, 0, 56, 48)).resize((16, 16), Image.LANCZOS))
  np.testing.assert_array_equal(got, ref.astype(np.float32) / 127.5 - 1.0)
  # Folders: sorted, images only; sources mix folders, files and splits in order.
  (tmp_path / "notes.txt").write_text("not an image")
  inputs = image_io.load_source([f"{tmp_path},split:test[3:5]"], config, lambda: builder)
  assert inputs.names == (str(tmp_path / "a.jpg"), str(tmp_path / "b.png"), "test[3]", "test[4]")
  np.testing.assert_array_equal(inputs.images[2:], split.images[3:5])
  np.testing.assert_array_equal(inputs.labels[0], [-1, -1, -1])
  np.testing.assert_array_equal(inputs.labels[3], split.labels[4])


def test_bad_inputs_are_named(env, tmp_path):
  config, builder = env["trained"].config, env["builder"]
  (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
  with pytest.raises(image_io.SourceError, match="cannot read image .*broken.png"):
    image_io.load_image(str(tmp_path / "broken.png"), config)
  Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
  with pytest.raises(image_io.SourceError, match="deep.png: image mode I;16 .* not supported"):
    image_io.load_image(str(tmp_path / "deep.png"), config)
  with pytest.raises(image_io.SourceError, match="cannot read image .*missing.png: no such file"):
    image_io.load_source([str(tmp_path / "missing.png")], config)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(image_io.SourceError, match="has no images"):
    image_io.load_source([str(empty)], config)
  with pytest.raises(image_io.SourceError, match="no split 'validation'; it has test, train"):
    image_io.split_source(builder, "validation")
  with pytest.raises(image_io.SourceError, match="selects no images"):
    image_io.split_source(builder, "test[100:]")
  with pytest.raises(image_io.SourceError, match="cannot parse split"):
    image_io.parse_split("test[:10%]")
  assert image_io.parse_split("test") == ("test", slice(None, None))
  assert image_io.parse_split("train[2:-1]") == ("train", slice(2, -1))
  assert image_io.split_source(builder, "test[-1]")[1] == [19]

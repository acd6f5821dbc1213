"""The Flax FID Inception-V3 against pytorch-fid, and the torch-free .pth loader. No torch here.

The reference numbers were made once by ``tests/make_fid_fixture.py`` with torch + pytorch-fid
(see docs/fid.md); the stand-in weights are regenerated with numpy by fid_fixture_weights.
"""

from __future__ import annotations

import collections
import io
import json
import pathlib
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fid_fixture_weights
from attrdis import fid
from attrdis import inception

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURES / "fid_reference.npz") as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def stand_in_state_dict():
  return fid_fixture_weights.fixture_state_dict(inception.state_dict_spec())


@pytest.fixture(scope="module")
def extractor(stand_in_state_dict, ref):
  variables = inception.variables_from_state_dict(stand_in_state_dict)
  return fid.InceptionFeatureExtractor(variables, batch_size=int(ref["batch_size"]))


@pytest.fixture(scope="module")
def features(extractor, ref):
  # Set b goes in as uint8 (what the CLI feeds); set a as float images in [-1, 1] (what the
  # model produces), so both input paths are compared with pytorch-fid.
  return {
    "a": extractor(ref["images_a"].astype(np.float32) / 127.5 - 1.0, value_range=(-1, 1)),
    "b": extractor(ref["images_b"]),
  }


# ------------------------------------------------------------------------------------------
# Architecture and weights.
# ------------------------------------------------------------------------------------------


def test_state_dict_spec_is_pytorch_fids(ref):
  torch_spec = {k: tuple(v) for k, v in json.loads(str(ref["state_dict_spec"])).items()}
  counters = {k for k in torch_spec if k.endswith(".num_batches_tracked")}
  ours = inception.state_dict_spec()
  assert {k: v for k, v in torch_spec.items() if k not in counters} == ours
  # One BatchNorm per conv, and 94 of them + fc: 472 arrays of which ~23.9 M numbers.
  assert len(counters) == 94 and len(ours) == 4 * 94 + 94 + 2
  assert sum(int(np.prod(s)) for s in ours.values()) == 23_885_392


def test_stand_in_weights_are_the_fixtures(ref, stand_in_state_dict):
  # If numpy's random streams ever change, this says so instead of a confusing mismatch.
  torch_spec = json.loads(str(ref["state_dict_spec"]))
  full = dict(stand_in_state_dict)
  for k, shape in torch_spec.items():
    if k.endswith("num_batches_tracked"):
      full[k] = fid_fixture_weights.fixture_tensor(k, shape)
  np.testing.assert_allclose(
    fid_fixture_weights.checksum(full), ref["weights_checksum"], rtol=1e-12
  )
  assert int(ref["weights_seed"]) == fid_fixture_weights.DEFAULT_SEED
  # BatchNorm is far from the identity, so a wrong BN port cannot pass the feature test.
  var = stand_in_state_dict["Mixed_6b.branch7x7_2.bn.running_var"]
  mean = stand_in_state_dict["Mixed_6b.branch7x7_2.bn.running_mean"]
  assert var.std() > 0.2 and np.abs(mean).max() > 0.05


def test_variables_layout(stand_in_state_dict):
  v = inception.variables_from_state_dict(stand_in_state_dict)
  w = stand_in_state_dict["Mixed_6b.branch7x7_2.conv.weight"]  # (out, in, 1, 7)
  k = np.asarray(v["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"])  # (1, 7, in, out)
  assert w.shape == (128, 128, 1, 7) and k.shape == (1, 7, 128, 128)
  assert k[0, 5, 3, 9] == w[9, 3, 0, 5]
  bn = v["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]
  np.testing.assert_array_equal(
    bn["var"], stand_in_state_dict["Mixed_7c.branch_pool.bn.running_var"]
  )
  np.testing.assert_array_equal(
    v["params"]["Conv2d_1a_3x3"]["bn"]["scale"], stand_in_state_dict["Conv2d_1a_3x3.bn.weight"]
  )


def test_variables_from_state_dict_rejects_bad_dicts(stand_in_state_dict):
  sd = dict(stand_in_state_dict)
  del sd["Mixed_5d.branch5x5_2.bn.running_var"]
  with pytest.raises(inception.WeightsError, match="Mixed_5d.branch5x5_2.bn.running_var"):
    inception.variables_from_state_dict(sd)
  sd = dict(stand_in_state_dict)
  sd["Conv2d_2a_3x3.conv.weight"] = np.zeros((32, 32, 3, 4), np.float32)
  with pytest.raises(inception.WeightsError, match=r"Conv2d_2a_3x3.conv.weight.*\(32, 32, 3, 3\)"):
    inception.variables_from_state_dict(sd)
  sd = dict(stand_in_state_dict)
  sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
  with pytest.raises(inception.WeightsError, match="torchvision"):
    inception.variables_from_state_dict(sd)


# ------------------------------------------------------------------------------------------
# Building blocks.
# ------------------------------------------------------------------------------------------


def test_resize_matches_torch_interpolate(ref):
  n = 0
  while f"resize_in_{n}" in ref:
    x, y = ref[f"resize_in_{n}"], ref[f"resize_out_{n}"]
    out = np.asarray(inception.resize_bilinear(jnp.asarray(x), y.shape[1:3]))
    np.testing.assert_allclose(out, y, rtol=0, atol=2e-6, err_msg=f"case {n}")
    n += 1
  assert n >= 5


def test_resize_has_no_antialiasing_unlike_jax_image_resize(ref):
  x, y = ref["resize_in_2"], ref["resize_out_2"]  # (5, 400) -> (2, 299): a downscale
  ours = np.asarray(inception.resize_bilinear(jnp.asarray(x), (2, 299)))
  theirs = np.asarray(jax.image.resize(jnp.asarray(x), (2, 2, 299, 3), "bilinear"))
  assert np.abs(theirs - y).max() > 1e-2  # jax's antialiased resize is not pytorch-fid's
  assert np.abs(ours - y).max() < 2e-6


def test_bilinear_weights_by_hand():
  i0, i1, w0, w1 = inception.bilinear_indices_weights(2, 4)  # scale 0.5
  # src = (i + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25
  np.testing.assert_array_equal(i0, [0, 0, 0, 1])
  np.testing.assert_array_equal(i1, [1, 1, 1, 1])
  np.testing.assert_allclose(w1, [0.0, 0.25, 0.75, 0.25])
  np.testing.assert_allclose(w0 + w1, 1.0)
  x = jnp.asarray([0.0, 8.0]).reshape(1, 1, 2, 1)
  np.testing.assert_allclose(
    np.asarray(inception.resize_bilinear(x, (1, 4))).ravel(), [0.0, 2.0, 6.0, 8.0]
  )


def test_pools_exclude_padding():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  avg = np.asarray(inception.avg_pool_3x3_exclude_pad(x))[0, :, :, 0]
  assert avg[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)  # corner: 4 real pixels, not 9
  assert avg[0, 1] == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 6)
  assert avg[1, 1] == pytest.approx(np.arange(16.0).reshape(4, 4)[:3, :3].mean())
  neg = -1.0 - x  # all negative: zero padding would win a max pool, -inf padding does not
  mx = np.asarray(inception.max_pool_3x3(neg, stride=1, pad=1))[0, :, :, 0]
  assert mx[0, 0] == -1.0 and mx.shape == (4, 4) and mx.max() < 0
  assert np.asarray(inception.max_pool_3x3(x, stride=2, pad=0)).shape == (1, 1, 1, 1)


def test_basic_conv_batchnorm_inference():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 2)), jnp.float32)
  kernel = np.zeros((1, 1, 2, 2), np.float32)
  kernel[0, 0, 0, 0], kernel[0, 0, 1, 1] = 1.0, -2.0
  mean, var = np.array([0.3, -0.1], np.float32), np.array([0.002, 1.5], np.float32)
  scale, bias = np.array([1.3, 0.7], np.float32), np.array([0.1, -0.2], np.float32)
  variables = {
    "params": {"conv": {"kernel": kernel}, "bn": {"scale": scale, "bias": bias}},
    "batch_stats": {"bn": {"mean": mean, "var": var}},
  }
  out = inception.BasicConv(2).apply(variables, x)
  pre = np.asarray(x) @ kernel[0, 0]
  expect = np.maximum((pre - mean) / np.sqrt(var + 1e-3) * scale + bias, 0)  # eps = 0.001
  np.testing.assert_allclose(np.asarray(out), expect, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# End to end against pytorch-fid.
# ------------------------------------------------------------------------------------------


def test_features_match_pytorch_fid(features, ref):
  for s in "ab":
    ours, theirs = features[s], ref[f"features_{s}"]
    assert ours.shape == theirs.shape == (8, 2048) and ours.dtype == np.float32
    # The stand-in weights give sane, image-dependent features.
    assert 0.05 < theirs.std() < 5 and theirs.std(axis=0).mean() > 0.01
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_statistics_and_fid_match_pytorch_fid(features, ref):
  for s in "ab":
    mu, sigma = fid.compute_statistics(features[s])
    np.testing.assert_allclose(mu, ref[f"mu_{s}"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.diag(sigma), ref[f"sigma_diag_{s}"], rtol=1e-3, atol=1e-8)
    assert np.trace(sigma) == pytest.approx(float(ref[f"sigma_trace_{s}"]), rel=1e-4)
  ours = fid.fid_from_features(features["a"], features["b"])
  assert ref["fid"] > 1.0  # the two sets really differ
  assert ours == pytest.approx(float(ref["fid"]), rel=1e-4)
  assert ours == pytest.approx(float(ref["fid_given_paths"]), rel=1e-4)
  # On pytorch-fid's own features the difference is only the matrix square root.
  on_theirs = fid.fid_from_features(ref["features_a"], ref["features_b"])
  assert on_theirs == pytest.approx(float(ref["fid"]), rel=1e-4)


# ------------------------------------------------------------------------------------------
# The torch-free .pth loader.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pth_small.pth", "pth_small_legacy.pth"])
def test_load_pth_matches_torch(name):
  if name == "pth_small.pth":
    assert zipfile.is_zipfile(FIXTURES / name)
  else:
    assert not zipfile.is_zipfile(FIXTURES / name)
  got = inception.load_pth(FIXTURES / name)
  assert isinstance(got, collections.OrderedDict)
  with np.load(FIXTURES / "pth_small_expected.npz") as f:
    expected = {k: f[k] for k in f.files}
  assert list(got) == [
    "conv.weight",
    "bn.running_var",
    "bn.num_batches_tracked",
    "transposed",
    "offset_view",
    "strided_view",
    "long_matrix",
    "empty",
    "scalar",
  ]
  assert set(got) == set(expected)
  for k, v in expected.items():
    assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  assert got["bn.num_batches_tracked"].dtype == np.int64
  assert int(got["bn.num_batches_tracked"]) == 123456789012
  assert got["long_matrix"][1, 2] == -(2**50)
  np.testing.assert_array_equal(got["strided_view"], np.arange(10, 20, 2) * 0.5 - 3.0)
  assert got["transposed"].flags["C_CONTIGUOUS"]


def test_load_state_dict_npz_and_pth(tmp_path):
  sd = inception.load_state_dict(FIXTURES / "pth_small.pth")
  np.savez(tmp_path / "w.npz", **sd)
  back = inception.load_state_dict(tmp_path / "w.npz")
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])


def _zip_pth(path, payload: bytes, storages: dict[str, bytes] | None = None):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/byteorder", "little")
    for key, raw in (storages or {}).items():
      zf.writestr(f"archive/data/{key}", raw)


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_refuses_anything_but_tensors(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(collections.OrderedDict(w=_Evil(str(marker))), protocol=2)
  _zip_pth(tmp_path / "evil.pth", payload)
  with pytest.raises(inception.UnsafePickleError, match="refusing to unpickle .*open"):
    inception.load_pth(tmp_path / "evil.pth")
  assert not marker.exists()
  # The same in the legacy layout (a sequence of pickles).
  with open(tmp_path / "evil_legacy.pth", "wb") as f:
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
      pickle.dump(obj, f, protocol=2)
    f.write(payload)
  with pytest.raises(inception.UnsafePickleError):
    inception.load_pth(tmp_path / "evil_legacy.pth")
  assert not marker.exists()
  # A global that merely looks harmless is refused too (only the listed ones are allowed).
  _zip_pth(tmp_path / "np.pth", pickle.dumps({"w": np.float32(1.0)}))
  with pytest.raises(inception.UnsafePickleError, match="numpy"):
    inception.load_pth(tmp_path / "np.pth")


def _torch_like_pickle(monkeypatch, tensors: dict) -> bytes:
  """Pickles {name: (key, numel, offset, size, stride)} the way torch.save lays out data.pkl.

  Fake ``torch`` / ``torch._utils`` modules make the globals come out as
  ``torch.FloatStorage`` and ``torch._utils._rebuild_tensor_v2``; no torch is involved.
  """
  fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

  class FloatStorage:
    pass

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called when pickling")

  FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
  monkeypatch.setitem(sys.modules, "torch", fake_torch)
  monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

  class Storage:
    def __init__(self, key, numel):
      self.key, self.numel = key, numel

  class Tensor:
    def __init__(self, storage, offset, size, stride):
      self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
      return (_rebuild_tensor_v2, self.args)

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, Storage):
        return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
      return None

  storages = {}
  sd = collections.OrderedDict()
  for name, (key, numel, offset, size, stride) in tensors.items():
    st = storages.setdefault(key, Storage(key, numel))
    sd[name] = Tensor(st, offset, size, stride)
  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump(sd)
  return buf.getvalue()


def test_hand_made_zip_pth_and_bad_storages(tmp_path, monkeypatch):
  payload = _torch_like_pickle(
    monkeypatch, {"a": ("0", 6, 1, (2, 2), (1, 2)), "b": ("0", 6, 0, (3,), (2,))}
  )
  monkeypatch.undo()
  raw = np.arange(6, dtype="<f4").tobytes()
  _zip_pth(tmp_path / "hand.pth", payload, {"0": raw})
  got = inception.load_pth(tmp_path / "hand.pth")
  np.testing.assert_array_equal(got["a"], [[1.0, 3.0], [2.0, 4.0]])  # offset 1, strides (1, 2)
  np.testing.assert_array_equal(got["b"], [0.0, 2.0, 4.0])  # same storage
  _zip_pth(tmp_path / "nodata.pth", payload)
  with pytest.raises(inception.WeightsError, match="missing"):
    inception.load_pth(tmp_path / "nodata.pth")
  _zip_pth(tmp_path / "short.pth", payload, {"0": raw[:8]})
  with pytest.raises(inception.WeightsError, match="truncated"):
    inception.load_pth(tmp_path / "short.pth")
  overrun = _torch_like_pickle(monkeypatch, {"a": ("0", 6, 3, (2, 2), (2, 1))})  # needs index 6
  monkeypatch.undo()
  _zip_pth(tmp_path / "overrun.pth", overrun, {"0": raw})
  with pytest.raises(inception.WeightsError, match="past the end"):
    inception.load_pth(tmp_path / "overrun.pth")


def test_not_a_weight_file(tmp_path):
  (tmp_path / "junk.pth").write_bytes(b"this is not a pickle at all")
  with pytest.raises(inception.WeightsError, match="not a PyTorch weight file"):
    inception.load_pth(tmp_path / "junk.pth")
  with pytest.raises(fid.FIDError, match="junk.pth"):
    fid.load_weights(tmp_path / "junk.pth")

"""The FID Inception-V3 (pool3 features) in Flax linen, and a torch-free .pth loader.

This is the network that pytorch-fid uses for FID (docs/design.md §4.5): torchvision's Inception-V3
layout with pytorch-fid's patched blocks (``FIDInceptionA/C/E_1/E_2``: the 3×3 average pools
exclude the zero padding from the mean, and the last block uses a 3×3 max pool), the weights
ported from the 2015-12-05 TensorFlow graph (``pt_inception-2015-12-05-6726825d.pth``).
Every convolution is conv (no bias) → BatchNorm (eps 0.001, running statistics) → ReLU.

Layout: NHWC inside. Input images are in [0, 1] (float) or uint8; they are resized to 299×299
with PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)`` semantics (no
antialiasing, see :func:`resize_bilinear`), scaled to [-1, 1], and the output is the 2048-d
global average of the last block ("pool3").

Weights: :func:`load_state_dict` reads a PyTorch ``.pth`` file (the zip format of torch ≥ 1.6
and the older legacy format) with a restricted unpickler, without torch; a ``.npz`` with the
same key names is accepted too. :func:`variables_from_state_dict` maps pytorch-fid's state-dict
names (``Mixed_5b.branch1x1.conv.weight`` …) onto this module's variables.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attrdis import errors

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
  "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILENAME
)
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the FID graph's classifier (not used for pool3, present in the file)
BN_EPSILON = 1e-3

Precision = Any

# --------------------------------------------------------------------------------------------
# Bilinear resize with PyTorch's align_corners=False semantics.
# --------------------------------------------------------------------------------------------


def bilinear_indices_weights(in_size: int, out_size: int):
  """Source indices and weights of PyTorch's bilinear interpolation along one axis.

  For output index i the source coordinate is ``(i + 0.5) * in/out - 0.5`` (clamped at 0),
  computed in float32 as PyTorch does on the CPU; it interpolates between ``floor`` and the
  next index (clamped to the last one). No antialiasing: on a downscale each output sample
  still reads only two input samples, unlike ``jax.image.resize``.

  Returns (i0, i1, w0, w1): int32 and float32 arrays of length ``out_size``.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
  scale = np.float32(in_size) / np.float32(out_size)
  dst = np.arange(out_size, dtype=np.float32)
  src = scale * (dst + np.float32(0.5)) - np.float32(0.5)
  src = np.maximum(src, np.float32(0.0)).astype(np.float32)
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
  return (i0.astype(np.int32), i1.astype(np.int32), (np.float32(1.0) - lam).astype(np.float32), lam)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Resizes NHWC ``x`` to ``size`` = (H, W) like ``F.interpolate(bilinear, align_corners=False)``.

  Implemented as explicit gathers and weights (two taps per axis), so a downscale does not
  low-pass filter first (``jax.image.resize`` would).
  """
  out_h, out_w = size
  _, h, w, _ = x.shape
  if (h, w) == (out_h, out_w):
    return x
  x = jnp.asarray(x, jnp.float32)
  i0, i1, w0, w1 = bilinear_indices_weights(w, out_w)
  x = (
    jnp.take(x, i0, axis=2) * w0[None, None, :, None]
    + jnp.take(x, i1, axis=2) * w1[None, None, :, None]
  )
  i0, i1, w0, w1 = bilinear_indices_weights(h, out_h)
  x = (
    jnp.take(x, i0, axis=1) * w0[None, :, None, None]
    + jnp.take(x, i1, axis=1) * w1[None, :, None, None]
  )
  return x


def preprocess(images: jax.Array, resize: bool = True) -> jax.Array:
  """Images NHWC in [0, 1] (float) or uint8 → float32 299×299 in [-1, 1], like pytorch-fid."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  if resize:
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  return 2.0 * x - 1.0


# --------------------------------------------------------------------------------------------
# The network. Submodule names follow torchvision / pytorch-fid attribute names so that a state
# dict key ``A.B.conv.weight`` maps onto the variable path A/B/conv/kernel.
# --------------------------------------------------------------------------------------------

_Pair = tuple[int, int]


def _pair(v) -> _Pair:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nn.Module):
  """conv (no bias, explicit symmetric zero padding) → BatchNorm(eps 1e-3, running stats) → ReLU."""

  features: int
  kernel: Any = 1
  stride: Any = 1
  padding: Any = 0
  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(
      self.features,
      _pair(self.kernel),
      strides=_pair(self.stride),
      padding=((ph, ph), (pw, pw)),
      use_bias=False,
      precision=self.precision,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def avg_pool_3x3_exclude_pad(x: jax.Array) -> jax.Array:
  """3×3 stride-1 average pool with padding 1 that divides by the count of real pixels.

  (pytorch-fid's ``F.avg_pool2d(..., count_include_pad=False)``, TensorFlow's behaviour.)
  """
  window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
  return total / count


def max_pool_3x3(x: jax.Array, stride: int, pad: int) -> jax.Array:
  """3×3 max pool; padded positions never win (they hold -inf)."""
  return jax.lax.reduce_window(
    x,
    -jnp.inf,
    jax.lax.max,
    (1, 3, 3, 1),
    (1, stride, stride, 1),
    ((0, 0), (pad, pad), (pad, pad), (0, 0)),
  )


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d (pytorch-fid's FIDInceptionA)."""

  pool_features: int
  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(64, name="branch1x1")(x)
    b5 = conv(48, name="branch5x5_1")(x)
    b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = conv(64, name="branch3x3dbl_1")(x)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, name="branch_pool")(avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction 35 → 17)."""

  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(384, 3, stride=2, name="branch3x3")(x)
    bd = conv(64, name="branch3x3dbl_1")(x)
    bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = conv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    bp = max_pool_3x3(x, stride=2, pad=0)
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e (pytorch-fid's FIDInceptionC): factorised 7×7 branches."""

  channels_7x7: int
  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, name="branch1x1")(x)
    b7 = conv(c7, name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, name="branch_pool")(avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction 17 → 8)."""

  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(192, name="branch3x3_1")(x)
    b3 = conv(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = conv(192, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
    bp = max_pool_3x3(x, stride=2, pad=0)
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (``pool='avg'``, FIDInceptionE_1) and Mixed_7c (``pool='max'``, FIDInceptionE_2)."""

  pool: str = "avg"
  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(320, name="branch1x1")(x)
    b3 = conv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
      ],
      axis=-1,
    )
    bd = conv(448, name="branch3x3dbl_1")(x)
    bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [
        conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
      ],
      axis=-1,
    )
    if self.pool == "avg":
      pooled = avg_pool_3x3_exclude_pad(x)
    elif self.pool == "max":
      pooled = max_pool_3x3(x, stride=1, pad=1)
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    bp = conv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's FID Inception-V3 up to pool3, NHWC.

  ``__call__(images)``: images (N, H, W, 3), float in [0, 1] or uint8 (with ``preprocess``
  True, the default), or already 299×299 in [-1, 1] (``preprocess=False``). Returns the
  (N, 2048) pool3 features, float32.
  """

  precision: Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x, preprocess_input: bool = True):
    if preprocess_input:
      x = preprocess(x)
    p = self.precision
    conv = functools.partial(BasicConv, precision=p)
    x = conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = max_pool_3x3(x, stride=2, pad=0)
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = max_pool_3x3(x, stride=2, pad=0)
    x = InceptionA(32, precision=p, name="Mixed_5b")(x)
    x = InceptionA(64, precision=p, name="Mixed_5c")(x)
    x = InceptionA(64, precision=p, name="Mixed_5d")(x)
    x = InceptionB(precision=p, name="Mixed_6a")(x)
    x = InceptionC(128, precision=p, name="Mixed_6b")(x)
    x = InceptionC(160, precision=p, name="Mixed_6c")(x)
    x = InceptionC(160, precision=p, name="Mixed_6d")(x)
    x = InceptionC(192, precision=p, name="Mixed_6e")(x)
    x = InceptionD(precision=p, name="Mixed_7a")(x)
    x = InceptionE("avg", precision=p, name="Mixed_7b")(x)
    x = InceptionE("max", precision=p, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


# --------------------------------------------------------------------------------------------
# State-dict names ↔ Flax variables.
# --------------------------------------------------------------------------------------------

# torch BatchNorm2d entry → (Flax collection, Flax name)
_BN_MAP = {
  "weight": ("params", "scale"),
  "bias": ("params", "bias"),
  "running_mean": ("batch_stats", "mean"),
  "running_var": ("batch_stats", "var"),
}


@functools.lru_cache(maxsize=None)
def _abstract_variables():
  model = FIDInceptionV3()
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, preprocess_input=False), x)


def state_dict_spec(include_fc: bool = True) -> dict[str, tuple[int, ...]]:
  """Keys and shapes (torch layout) of pytorch-fid's FID Inception state dict.

  Conv weights are (out, in, kh, kw); BatchNorm has weight, bias, running_mean, running_var
  of shape (C,). The classifier ``fc.weight`` (1008, 2048) and ``fc.bias`` are in the file but
  not used for pool3. ``*.bn.num_batches_tracked`` (torch's BN step counters) are not listed:
  they may or may not be in a file and carry no information for inference.
  """
  spec: dict[str, tuple[int, ...]] = {}
  flat = jax.tree_util.tree_flatten_with_path(_abstract_variables())[0]
  for path, leaf in flat:
    names = [p.key for p in path]
    collection, *module_path, leaf_name = names
    prefix = ".".join(module_path)
    if module_path[-1] == "conv":
      kh, kw, cin, cout = leaf.shape
      spec[prefix + ".weight"] = (cout, cin, kh, kw)
    else:
      torch_name = {
        "scale": "weight",
        "bias": "bias",
        "mean": "running_mean",
        "var": "running_var",
      }[leaf_name]
      spec[prefix + "." + torch_name] = tuple(leaf.shape)
  if include_fc:
    spec["fc.weight"] = (NUM_CLASSES, FEATURE_DIM)
    spec["fc.bias"] = (NUM_CLASSES,)
  return dict(sorted(spec.items()))


class WeightsError(errors.UserError, ValueError):
  """A weight file that is not (or not entirely) a FID Inception state dict."""


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Maps pytorch-fid's FID Inception state dict (numpy arrays) onto Flax variables.

  Checks that every needed key is present with the right shape. Extra keys (``fc.*``,
  ``num_batches_tracked``) are ignored. Refuses torchvision's ImageNet Inception weights
  (1000-class ``fc``): their FIDs are not comparable with the standard ones.
  """
  fc = state_dict.get("fc.weight")
  if fc is not None and tuple(np.shape(fc)) == (1000, FEATURE_DIM):
    raise WeightsError(
      "these are torchvision's ImageNet Inception-V3 weights (1000 classes), "
      f"not the FID weights ({FID_WEIGHTS_FILENAME}, 1008 classes); FIDs "
      "computed with them are not comparable with standard FIDs"
    )
  spec = state_dict_spec(include_fc=False)
  missing = [k for k in spec if k not in state_dict]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise WeightsError(f"not a FID Inception-V3 state dict: key {missing[0]!r} is missing{more}")
  variables: dict = {"params": {}, "batch_stats": {}}
  for key, shape in spec.items():
    value = np.asarray(state_dict[key])
    if tuple(value.shape) != shape:
      raise WeightsError(f"{key}: expected shape {shape}, got {tuple(value.shape)}")
    *module_path, leaf = key.split(".")
    if module_path[-1] == "conv":
      collection, name = "params", "kernel"
      value = np.transpose(value, (2, 3, 1, 0))  # OIHW → HWIO
    else:
      collection, name = _BN_MAP[leaf]
    node = variables[collection]
    for part in module_path:
      node = node.setdefault(part, {})
    node[name] = jnp.asarray(value, jnp.float32)
  return variables


# --------------------------------------------------------------------------------------------
# Torch-free .pth reading.
# --------------------------------------------------------------------------------------------


class UnsafePickleError(errors.UserError, pickle.UnpicklingError):
  """The pickle asks for something other than tensors, storages and ordered dicts."""


_STORAGE_DTYPES = {
  "FloatStorage": np.dtype(np.float32),
  "DoubleStorage": np.dtype(np.float64),
  "LongStorage": np.dtype(np.int64),
}


class _StorageType:
  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


class _StorageRef:
  """A storage named by the pickle; its bytes are attached after unpickling."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.offset = 0  # in elements (legacy storage views)
    self.root: _StorageRef | None = None
    self.data: np.ndarray | None = None

  def array(self) -> np.ndarray:
    if self.root is not None:
      base = self.root.array()
      return base[self.offset : self.offset + self.numel]
    if self.data is None:
      raise WeightsError(f"storage {self.key!r} has no data in the file")
    return self.data


class _TensorRef:
  def __init__(self, storage, offset, size, stride):
    if not isinstance(storage, _StorageRef):
      raise UnsafePickleError("tensor rebuilt from something that is not a storage")
    self.storage, self.offset = storage, int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)

  def materialize(self) -> np.ndarray:
    base = self.storage.array()
    if len(self.size) != len(self.stride):
      raise WeightsError("tensor size and stride have different lengths")
    if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
      raise WeightsError("negative tensor size, stride or offset")
    if 0 in self.size:
      return np.zeros(self.size, base.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= base.shape[0]:
      raise WeightsError(f"tensor view runs past the end of storage {self.storage.key!r}")
    view = np.lib.stride_tricks.as_strided(
      base[self.offset :],
      shape=self.size,
      strides=tuple(s * base.itemsize for s in self.stride),
      writeable=False,
    )
    return np.array(view, order="C", copy=True)  # an independent, C-contiguous copy


def _rebuild_tensor_v2(
  storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
  del requires_grad, backward_hooks, metadata
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update({("torch", n): _StorageType(n) for n in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
  """Rebuilds tensors as references to storages; refuses every other global."""

  def __init__(self, file, storages: dict[str, _StorageRef]):
    super().__init__(file)
    self._storages = storages

  def find_class(self, module, name):
    found = _ALLOWED_GLOBALS.get((module, name))
    if found is None:
      raise UnsafePickleError(
        f"refusing to unpickle {module}.{name}: only tensors (float32/float64/int64 "
        "storages) in (ordered) dicts are allowed in a weight file"
      )
    return found

  def persistent_load(self, pid):
    if isinstance(pid, bytes):
      pid = pid.decode("ascii")
    if not isinstance(pid, tuple) or not pid:
      raise UnsafePickleError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage" or len(pid) not in (5, 6):
      raise UnsafePickleError(f"unexpected persistent id of type {kind!r}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) == 6 else None
    if not isinstance(storage_type, _StorageType):
      raise UnsafePickleError(f"unsupported storage type {storage_type!r}")
    key = key.decode("ascii") if isinstance(key, bytes) else str(key)
    root = self._storages.get(key)
    if root is None:
      root = self._storages[key] = _StorageRef(key, storage_type.dtype, int(numel))
    elif root.dtype != storage_type.dtype:
      raise WeightsError(f"storage {key!r} is used with two dtypes")
    if view is None:
      return root
    view_key, offset, view_size = view
    ref = _StorageRef(str(view_key), storage_type.dtype, int(view_size))
    ref.root, ref.offset = root, int(offset)
    return ref


def _materialize(obj):
  if isinstance(obj, _TensorRef):
    return obj.materialize()
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def _load_zip(path: str):
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
      raise WeightsError(f"{path}: a zip without exactly one data.pkl is not a torch.save file")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
      if byteorder not in ("little", "big"):
        raise WeightsError(f"{path}: unknown byte order {byteorder!r}")
    storages: dict[str, _StorageRef] = {}
    obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
    for key, ref in storages.items():
      member = f"{prefix}data/{key}"
      if member not in names:
        raise WeightsError(f"{path}: storage {key!r} is missing from the archive")
      raw = zf.read(member)
      dtype = ref.dtype.newbyteorder("<" if byteorder == "little" else ">")
      if len(raw) < ref.numel * dtype.itemsize:
        raise WeightsError(f"{path}: storage {key!r} is truncated")
      ref.data = np.frombuffer(raw, dtype, count=ref.numel).astype(ref.dtype.newbyteorder("="))
  return obj


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _load_legacy(path: str):
  with open(path, "rb") as f:
    storages: dict[str, _StorageRef] = {}
    try:
      magic = _RestrictedUnpickler(f, storages).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
      raise WeightsError(f"{path}: not a PyTorch weight file ({e})") from None
    if magic != _LEGACY_MAGIC:
      raise WeightsError(f"{path}: not a PyTorch weight file (bad magic number)")
    if _RestrictedUnpickler(f, storages).load() != _LEGACY_PROTOCOL:
      raise WeightsError(f"{path}: unsupported legacy PyTorch protocol version")
    sys_info = _RestrictedUnpickler(f, storages).load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    obj = _RestrictedUnpickler(f, storages).load()
    keys = _RestrictedUnpickler(f, storages).load()
    order = "<" if little else ">"
    for key in keys:
      key = key.decode("ascii") if isinstance(key, bytes) else str(key)
      ref = storages.get(key)
      if ref is None:
        raise WeightsError(f"{path}: storage {key!r} listed but never used")
      header = f.read(8)
      if len(header) != 8:
        raise WeightsError(f"{path}: truncated at storage {key!r}")
      (numel,) = struct.unpack(order + "q", header)
      dtype = ref.dtype.newbyteorder(order)
      raw = f.read(numel * dtype.itemsize)
      if len(raw) != numel * dtype.itemsize or numel < ref.numel:
        raise WeightsError(f"{path}: truncated at storage {key!r}")
      ref.data = np.frombuffer(raw, dtype).astype(ref.dtype.newbyteorder("="))
  return obj


def load_pth(path: str | os.PathLike) -> Any:
  """Reads a ``torch.save`` file without torch; tensors come back as numpy arrays.

  Both the zip format (torch ≥ 1.6) and the legacy format are read. Only ordered dicts, plain
  containers, and tensors on float32/float64/int64 storages are accepted
  (:class:`UnsafePickleError` otherwise); nothing in the file is executed.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    obj = _load_zip(path)
  else:
    obj = _load_legacy(path)
  return _materialize(obj)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A state dict {name: array} from a ``.pth`` (torch-free) or a ``.npz`` with the same names."""
  path = os.fspath(path)
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  obj = load_pth(path)
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise WeightsError(f"{path}: does not hold a state dict of tensors")
  return dict(obj)


def load_variables(path: str | os.PathLike) -> dict:
  """Flax variables of :class:`FIDInceptionV3` from a FID weight file (.pth or .npz)."""
  return variables_from_state_dict(load_state_dict(path))

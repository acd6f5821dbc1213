"""The convolutions of the networks, and the algorithms that compute them.

Every conv of ``attrdis.models`` goes through :func:`conv2d` (the ``Conv`` and ``UpsampleConv``
modules here), which computes the same function (NHWC × HWIO, no dilation) by one of three
algorithms:

* ``xla``: ``lax.conv_general_dilated`` (cuDNN on GPUs; used on every non-CPU backend);
* ``gemm``: im2col (the shifted views side by side) and matmuls, one per kernel row:
  XLA:CPU's own convolutions run at a third of its matmul speed;
* ``winograd``: F(2×2, 3×3) Winograd for 3×3 stride-1 convs with even output sizes (the
  decoder's residual blocks, ~90 % of the FLOPs): 16 matmuls over the transformed tiles
  instead of 36 multiply-adds per 2×2 outputs; float32 only (its transforms are exact in
  binary, relative error ~1e-6).

``auto`` (the default) picks ``xla`` off CPU and for small convs (``GEMM_MIN_MACS``), else
``winograd`` where it applies in float32 and ``gemm`` otherwise. ``conv_implementation(name)``
forces one while tracing (tests, FLOP counts). The parameters are named and initialised as
``nn.Conv``'s, so checkpoints do not depend on the algorithm.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import flax.linen as nn
from flax.linen.dtypes import promote_dtype
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

CONV_IMPLS = ("auto", "xla", "gemm", "winograd")
_forced_conv_impl: list[str] = []


@contextlib.contextmanager
def conv_implementation(impl: str):
  """Within the block, every ``conv2d`` traced uses ``impl`` (one of CONV_IMPLS)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv implementation {impl!r}: choose one of {CONV_IMPLS}")
  _forced_conv_impl.append(impl)
  try:
    yield
  finally:
    _forced_conv_impl.pop()


# Below this many multiply-adds per call "auto" keeps XLA's conv on CPU too: such convs cost
# little either way, and the im2col/Winograd graphs compile slower (tiny test models).
GEMM_MIN_MACS = 10**8


def resolve_conv_impl(impl: str, dtype, kernel_size, strides, out_size, macs=None) -> str:
  if _forced_conv_impl and _forced_conv_impl[-1] != "auto":
    impl = _forced_conv_impl[-1]
  if impl == "auto":
    if jax.default_backend() != "cpu" or (macs is not None and macs < GEMM_MIN_MACS):
      return "xla"
    impl = "winograd"
  if impl == "winograd" and not (
    tuple(kernel_size) == (3, 3)
    and tuple(strides) == (1, 1)
    and out_size[0] % 2 == 0
    and out_size[1] % 2 == 0
    and jnp.dtype(dtype) == jnp.float32
  ):
    impl = "gemm"
  return impl


def conv_gemm(x: jax.Array, kernel: jax.Array, strides) -> jax.Array:
  """VALID conv as im2col + matmuls (x already padded), one matmul per kernel row: the
  kw shifted views of a row side by side (K = kw·C), the rows' products summed. Row by row
  keeps the im2col buffer kh times smaller at the same speed."""
  kh, kw, c, f = kernel.shape
  sh, sw = strides
  b, h, w, _ = x.shape
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  y = None
  for i in range(kh):
    views = [
      x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] for j in range(kw)
    ]
    cols = views[0] if kw == 1 else jnp.concatenate(views, axis=-1)
    row = jnp.dot(cols.reshape(b * ho * wo, kw * c), kernel[i].reshape(kw * c, f))
    y = row if y is None else y + row
  return y.reshape(b, ho, wo, f)


# F(2×2, 3×3): Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A (Lavin & Gray 2016), as Kronecker products so that
# each transform is one small matmul over all tiles and channels.
_WINO_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def conv_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """VALID 3×3 stride-1 conv by Winograd F(2×2, 3×3) (x already padded; even output sizes)."""
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  th, tw = (h - 2) // 2, (w - 2) // 2  # 2×2 output tiles; input tiles 4×4 at stride 2
  hi = jax.lax.Precision.HIGHEST
  d = jnp.stack(
    [x[:, i : i + 2 * th - 1 : 2, j : j + 2 * tw - 1 : 2, :] for i in range(4) for j in range(4)]
  )  # (16, b, th, tw, c)
  u = jnp.einsum("xi,ijcf,yj->xycf", _WINO_G, kernel, _WINO_G, precision=hi).reshape(16, c, f)
  v = jnp.dot(np.kron(_WINO_BT, _WINO_BT), d.reshape(16, -1), precision=hi)
  m = jnp.einsum("pnc,pcf->pnf", v.reshape(16, b * th * tw, c), u)
  y = jnp.dot(np.kron(_WINO_AT, _WINO_AT), m.reshape(16, -1), precision=hi)
  y = y.reshape(2, 2, b, th, tw, f).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(b, 2 * th, 2 * tw, f)


def padding_pairs(in_size, kernel_size, strides, padding: str):
  """'VALID' → no padding; 'SAME' → TF's (output ⌈in/stride⌉, the odd pixel after)."""
  if padding == "VALID":
    return [(0, 0)] * len(in_size)
  if padding != "SAME":
    raise ValueError(f"padding {padding!r}: use 'VALID', 'SAME' or explicit pairs")
  pairs = []
  for n, k, s in zip(in_size, kernel_size, strides):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pairs.append((total // 2, total - total // 2))
  return pairs


def conv2d(
  x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="VALID", impl: str = "auto"
) -> jax.Array:
  """NHWC input, HWIO kernel; ``padding`` 'VALID', 'SAME' (TF's) or ((lo, hi), (lo, hi))."""
  kh, kw = kernel.shape[:2]
  strides = tuple(strides)
  pads = (
    padding_pairs(x.shape[1:3], (kh, kw), strides, padding)
    if isinstance(padding, str)
    else [tuple(p) for p in padding]
  )
  out = tuple((x.shape[1 + a] + sum(pads[a]) - (kh, kw)[a]) // strides[a] + 1 for a in range(2))
  macs = x.shape[0] * out[0] * out[1] * kh * kw * x.shape[-1] * kernel.shape[-1]
  impl = resolve_conv_impl(impl, x.dtype, (kh, kw), strides, out, macs)
  if impl == "xla":
    return jax.lax.conv_general_dilated(
      x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
  if any(p != (0, 0) for p in pads):
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  if impl == "winograd":
    return conv_winograd(x, kernel)
  return conv_gemm(x, kernel, strides)


class Conv(nn.Module):
  """``nn.Conv`` (same parameters, names and initialisers) computed by :func:`conv2d`."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = "VALID"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      "kernel",
      nn.initializers.lecun_normal(),
      (*self.kernel_size, x.shape[-1], self.features),
      self.param_dtype,
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    return conv2d(x, kernel, self.strides, self.padding, self.impl) + bias


def edge_pad_before(x: jax.Array) -> jax.Array:
  """One row and one column repeated before the first (replicate padding, top and left)."""
  return jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)), mode="edge")


def depth_to_space2(y: jax.Array) -> jax.Array:
  """(b, H, W, (2, 2, F)) → (b, 2H, 2W, F): channel block (p, q) goes to pixel (2i+p, 2j+q)."""
  b, h, w, c = y.shape
  f = c // 4
  y = y.reshape(b, h, w, 2, 2, f).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, f)


def upsample4_conv3s2_kernel(kernel: jax.Array) -> jax.Array:
  """The 2×2 kernel (2, 2, C, 4F) equivalent to nearest ×4 → reflect pad 1 → 3×3 conv stride 2.

  Output pixel o = 2k + p (per axis) of the original reads upsampled rows 2o−1, 2o, 2o+1, i.e.
  input rows (k−1, k, k) for p = 0 (row −1 being row 0 by the reflection of the repeated
  rows) and (k, k, k) for p = 1. On the input padded by one replicated row before, phase 0
  therefore takes taps (w₀, w₁+w₂) at rows (k, k+1) and phase 1 taps (0, w₀+w₁+w₂): the
  same sums of products, with the kernel taps that meet the same input pixel added first.
  Built with plain additions (exact in float32, no matmul precision involved).
  """

  def phases(k, axis):
    w0, w1, w2 = (jnp.take(k, i, axis=axis) for i in range(3))
    zero = jnp.zeros_like(w0)
    # [phase][tap] along a new leading pair of axes
    return jnp.stack([jnp.stack([w0, w1 + w2]), jnp.stack([zero, w0 + w1 + w2])])

  k = phases(kernel, 0)  # (py, ty, 3x, C, F)
  k = jax.vmap(jax.vmap(lambda t: phases(t, 0)))(k)  # (py, ty, px, tx, C, F)
  c, f = kernel.shape[2], kernel.shape[3]
  return k.transpose(1, 3, 4, 0, 2, 5).reshape(2, 2, c, 4 * f)


class UpsampleConv(nn.Module):
  """Nearest ×4 resize → reflect pad 1 → conv 3×3 stride 2, computed without the resize.

  The same function (and the same parameters, named and initialised as ``nn.Conv``'s) as
  ``nn.Conv(features, (3, 3), (2, 2), 'VALID')(reflect_pad(upsample_nearest(x, 4), 1))``, as
  one 2×2 conv with 4·F outputs on the input itself followed by a depth-to-space: 16
  multiply-adds per output pixel and input channel (on a quarter of the pixels) instead of
  36, and no (4H, 4W) intermediate. See :func:`upsample4_conv3s2_kernel`.
  """

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), self.param_dtype
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
    k2 = upsample4_conv3s2_kernel(kernel)
    x, k2, bias = promote_dtype(x, k2, bias, dtype=self.dtype)
    return depth_to_space2(conv2d(edge_pad_before(x), k2)) + bias

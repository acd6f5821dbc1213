"""The networks of the paper (docs/design.md §1), as Flax linen modules, NHWC.

Three parameter groups, each its own module so that each has its own optimizer:

* ``Generator``: the M+1 encoders E_1..E_M, E_0 and the decoder (updated by L_G);
* ``Critic``: the PatchGAN critic D (updated by L_D);
* ``Classifiers``: the M attribute classifiers C_m (updated by L_cls^c), whose dense
  head also takes a code z_m directly (the latent entry of Eq. 3).

Codes are kept as a list ``[z_1, ..., z_M, z_0]`` (attribute codes first, z_0 last),
each of shape (b, S/4, S/4, code_channels). The convolutions and the algorithms that compute
them (XLA, im2col + matmuls, Winograd) are in ``attrdis.conv_kernels``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from attrdis.conv_kernels import Conv, UpsampleConv

Dtype = Any


def at_least_f32(x: jax.Array) -> jax.Array:
  """Outputs leave the networks in float32 (or float64 when computing in float64)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def reflect_pad(x: jax.Array, p: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


def zero_pad(x: jax.Array, p: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  """Nearest-neighbour resize by an integer factor (TF's resize_nearest_neighbor)."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
  return x.reshape(b, h * factor, w * factor, c)


class InstanceNorm(nn.Module):
  """Instance normalisation with learned scale and offset, statistics in float32."""

  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.InstanceNorm(epsilon=self.epsilon, dtype=self.dtype, force_float32_reductions=True)(x)


NORMS = ("instance", "layer", "none")


def normalize(x, kind: str, dtype):
  """The normalisation after a conv: ``instance`` (the paper's: per image and channel),
  ``layer`` (per image over all positions and channels, learned per-channel scale and
  offset: the channels keep their relative means) or ``none``."""
  if kind == "instance":
    return InstanceNorm(dtype=dtype)(x)
  if kind == "layer":
    return nn.LayerNorm(reduction_axes=(1, 2, 3), dtype=dtype, force_float32_reductions=True)(x)
  if kind == "none":
    return x
  raise ValueError(f"normalisation {kind!r}: choose one of {NORMS}")


class ConvNormReLU(nn.Module):
  """[nearest ×upsample] → [reflect pad] → conv (no padding) → norm → [ReLU]."""

  features: int
  kernel: int
  stride: int = 1
  reflect: int = 0
  same: bool = False  # TF 'SAME' padding instead of explicit reflect padding
  relu: bool = True
  upsample: int = 1  # nearest-neighbour resize factor before the padding
  norm: str = "instance"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if (self.upsample, self.reflect, self.kernel, self.stride, self.same) == (4, 1, 3, 2, False):
      x = UpsampleConv(self.features, dtype=self.dtype, name="Conv_0")(x)
    else:
      if self.upsample > 1:
        x = upsample_nearest(x, self.upsample)
      if self.reflect:
        x = reflect_pad(x, self.reflect)
      x = Conv(
        self.features,
        (self.kernel, self.kernel),
        (self.stride, self.stride),
        padding="SAME" if self.same else "VALID",
        dtype=self.dtype,
        name="Conv_0",
      )(x)
    x = normalize(x, self.norm, self.dtype)
    return nn.relu(x) if self.relu else x


class Encoder(nn.Module):
  """enc-1..enc-3 of Table I; the output of enc-3 *is* the code z_m."""

  widths: Sequence[int] = (32, 64, 128)
  norm: str = "instance"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    w1, w2, w3 = self.widths
    x = ConvNormReLU(w1, 7, reflect=3, norm=self.norm, dtype=self.dtype, name="enc1")(x)
    x = ConvNormReLU(w2, 3, stride=2, same=True, norm=self.norm, dtype=self.dtype, name="enc2")(x)
    return at_least_f32(
      ConvNormReLU(w3, 3, stride=2, same=True, norm=self.norm, dtype=self.dtype, name="enc3")(x)
    )


class ResidualBlock(nn.Module):
  features: int
  norm: str = "instance"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = ConvNormReLU(self.features, 3, reflect=1, norm=self.norm, dtype=self.dtype, name="a")(x)
    h = ConvNormReLU(
      self.features, 3, reflect=1, relu=False, norm=self.norm, dtype=self.dtype, name="b"
    )(h)
    return x + h


class Decoder(nn.Module):
  """dec-res-1..N, then two (nearest ×4 → conv stride 2) upsamplings, then a 7×7 conv + tanh.

  The upsamplings are computed by :class:`UpsampleConv` (the same function, without the ×4
  intermediate)."""

  num_codes: int
  code_channels: int = 128
  num_res_blocks: int = 6
  up_widths: Sequence[int] = (64, 32)
  wide: bool = False  # the released code's widths: up_widths × (M+1)
  norm: str = "instance"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, codes: Sequence[jax.Array]):
    # Codes arrive in float32; the residual stream runs in the compute dtype.
    h = jnp.concatenate([jnp.asarray(z, self.dtype) for z in codes], axis=-1)
    c = self.code_channels * self.num_codes
    for i in range(self.num_res_blocks):
      h = ResidualBlock(c, norm=self.norm, dtype=self.dtype, name=f"res{i + 1}")(h)
    mult = self.num_codes if self.wide else 1
    for i, w in enumerate(self.up_widths):
      h = ConvNormReLU(
        w * mult,
        3,
        stride=2,
        reflect=1,
        upsample=4,
        norm=self.norm,
        dtype=self.dtype,
        name=f"dec{i + 1}",
      )(h)
    h = Conv(3, (7, 7), padding="VALID", dtype=self.dtype, name="out")(reflect_pad(h, 3))
    return jnp.tanh(at_least_f32(h))


class Generator(nn.Module):
  """Encoders E_1..E_M, E_0 and the decoder: one parameter group."""

  num_attributes: int
  encoder_widths: Sequence[int] = (32, 64, 128)
  num_res_blocks: int = 6
  decoder_up_widths: Sequence[int] = (64, 32)
  wide_decoder: bool = False
  norm: str = "instance"  # after every conv of the encoders and the decoder (NORMS)
  dtype: Dtype = jnp.float32

  def setup(self):
    # encoders[m - 1] is E_m for m = 1..M; encoders[M] is E_0.
    self.encoders = [
      Encoder(self.encoder_widths, norm=self.norm, dtype=self.dtype)
      for _ in range(self.num_attributes + 1)
    ]
    self.decoder = Decoder(
      num_codes=self.num_attributes + 1,
      code_channels=self.encoder_widths[-1],
      num_res_blocks=self.num_res_blocks,
      up_widths=self.decoder_up_widths,
      wide=self.wide_decoder,
      norm=self.norm,
      dtype=self.dtype,
    )

  def encode(self, x) -> list[jax.Array]:
    """Returns [z_1, ..., z_M, z_0]."""
    return [enc(x) for enc in self.encoders]

  def decode(self, codes: Sequence[jax.Array]) -> jax.Array:
    return self.decoder(codes)

  def __call__(self, x):
    return self.decode(self.encode(x))


def critic_num_blocks(image_size: int, max_blocks: int = 6) -> int:
  """Stride-2 blocks that fit: halve while the map stays ≥ 2×2 (six at 128 px → 2×2)."""
  n, s = 0, image_size
  while n < max_blocks and s // 2 >= 2:
    s //= 2
    n += 1
  return n


class Critic(nn.Module):
  """PatchGAN critic: blocks of zero-pad 1 → conv 4×4 s2 → LeakyReLU(0.01), then a 3×3 conv to 1."""

  image_size: int
  base_width: int = 64
  max_blocks: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(critic_num_blocks(self.image_size, self.max_blocks)):
      x = Conv(
        self.base_width * 2**i,
        (4, 4),
        (2, 2),
        padding="VALID",
        dtype=self.dtype,
        name=f"block{i + 1}",
      )(zero_pad(x, 1))
      x = nn.leaky_relu(x, 0.01)
    x = Conv(1, (3, 3), padding="VALID", dtype=self.dtype, name="out")(zero_pad(x, 1))
    return at_least_f32(x)


class Classifier(nn.Module):
  """Table II: two conv 4×4 s2 layers, flatten, dense. ``latent`` enters at the flatten."""

  num_classes: int
  widths: Sequence[int] = (64, 128)
  leaky: bool = True  # the paper's LeakyReLU; the released code uses ReLU
  dtype: Dtype = jnp.float32

  def setup(self):
    self.convs = [Conv(w, (4, 4), (2, 2), padding="VALID", dtype=self.dtype) for w in self.widths]
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def _act(self, x):
    return nn.leaky_relu(x, 0.01) if self.leaky else nn.relu(x)

  def latent(self, z):
    """Logits of the dense head on a code (or on the conv features): same weights, same flatten."""
    return at_least_f32(self.head(z.reshape(z.shape[0], -1)))

  def __call__(self, x):
    for conv in self.convs:
      x = self._act(conv(zero_pad(x, 1)))
    return self.latent(x)


class Classifiers(nn.Module):
  """The M classifiers C_1..C_M: one parameter group."""

  num_classes: Sequence[int]
  widths: Sequence[int] = (64, 128)
  leaky: bool = True
  dtype: Dtype = jnp.float32

  def setup(self):
    self.classifiers = [
      Classifier(n, self.widths, self.leaky, dtype=self.dtype) for n in self.num_classes
    ]

  def __call__(self, x) -> list[jax.Array]:
    """Image path: [C_m(x) for m = 1..M]."""
    return [c(x) for c in self.classifiers]

  def latent(self, z) -> list[jax.Array]:
    """Latent path of every classifier on one code z: [C_m(z) for m = 1..M]."""
    return [c.latent(z) for c in self.classifiers]

  def latent_all(self, codes: Sequence[jax.Array]) -> list[list[jax.Array]]:
    """[[C_m(z) for m = 1..M] for z in codes]: the codes stacked along the batch, so that each
    classifier's dense head runs once (one matmul per classifier instead of one per code)."""
    sizes = [z.shape[0] for z in codes]
    stacked = jnp.concatenate(list(codes), axis=0)
    per_classifier = [c.latent(stacked) for c in self.classifiers]
    bounds = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    return [[l[bounds[k] : bounds[k + 1]] for l in per_classifier] for k in range(len(codes))]

  def latent_one(self, z, m: int) -> jax.Array:
    """C_{m+1}(z) through the latent entry (m is 0-based)."""
    return self.classifiers[m].latent(z)

"""Shapes, structure and parameter counts of the networks against docs/design.md §1 and
the paper's Tables I–II."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import parameter_overview

from attrdis import configuration
from attrdis import models
from attrdis import train_state


def conv(k, cin, cout):
  return k * k * cin * cout + cout


def test_paper_model_shapes_and_parameter_counts_128px():
  """The 128 px MultiPIE model (M = 3) built from the base config, counted by Table I/II."""
  config = configuration.base_config()
  num_classes = (337, 4, 20)
  m = train_state.create_models(config, num_classes)
  x = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
  params = jax.eval_shape(lambda: train_state.init_params(m, jax.random.key(0)))

  codes = jax.eval_shape(
    lambda p, x: m.gen.apply({"params": p}, x, method="encode"), params["gen"], x
  )
  assert [c.shape for c in codes] == [(2, 32, 32, 128)] * 4
  out = jax.eval_shape(
    lambda p, c: m.gen.apply({"params": p}, c, method="decode"), params["gen"], codes
  )
  assert out.shape == (2, 128, 128, 3)
  scores = jax.eval_shape(lambda p, x: m.critic.apply({"params": p}, x), params["critic"], x)
  assert scores.shape == (2, 2, 2, 1)  # six stride-2 blocks: 128 → 2
  logits = jax.eval_shape(lambda p, x: m.cls.apply({"params": p}, x), params["cls"], x)
  assert [l.shape for l in logits] == [(2, n) for n in num_classes]

  inorm = lambda c: 2 * c  # learned scale and offset
  encoder = conv(7, 3, 32) + inorm(32) + conv(3, 32, 64) + inorm(64) + conv(3, 64, 128) + inorm(128)
  c = 128 * 4
  decoder = (
    6 * 2 * (conv(3, c, c) + inorm(c))
    + conv(3, c, 64)
    + inorm(64)
    + conv(3, 64, 32)
    + inorm(32)
    + conv(7, 32, 3)
  )
  critic = sum(
    conv(4, ci, co) for ci, co in zip((3, 64, 128, 256, 512, 1024), (64, 128, 256, 512, 1024, 2048))
  ) + conv(3, 2048, 1)
  classifiers = sum(conv(4, 3, 64) + conv(4, 64, 128) + 128 * 32 * 32 * n + n for n in num_classes)
  count = parameter_overview.count_parameters
  assert count(params["gen"]) == 4 * encoder + decoder
  assert count(params["critic"]) == critic
  assert count(params["cls"]) == classifiers


def test_wide_decoder_is_the_released_codes_widths():
  config = configuration.base_config()
  config.image_size = 32
  config.model.wide_decoder = True
  m = train_state.create_models(config, (3, 4))
  params = jax.eval_shape(lambda: train_state.init_params(m, jax.random.key(0)))
  dec = params["gen"]["decoder"]
  assert dec["dec1"]["Conv_0"]["kernel"].shape == (3, 3, 384, 64 * 3)
  assert dec["dec2"]["Conv_0"]["kernel"].shape == (3, 3, 64 * 3, 32 * 3)


@pytest.mark.parametrize(
  "size,blocks,final", [(16, 3, 2), (32, 4, 2), (64, 5, 2), (128, 6, 2), (256, 6, 4), (24, 3, 3)]
)
def test_critic_blocks_follow_image_size(size, blocks, final):
  assert models.critic_num_blocks(size) == blocks
  critic = models.Critic(image_size=size, base_width=2)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  out = jax.eval_shape(
    lambda: critic.apply(critic.init(jax.random.key(0), jnp.zeros(x.shape)), jnp.zeros(x.shape))
  )
  assert out.shape == (1, final, final, 1)


def test_codes_enter_the_classifier_dense_head():
  clf = models.Classifier(num_classes=3, widths=(4, 8))
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  params = clf.init(jax.random.key(0), x)["params"]
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 8)), jnp.float32)
  got = clf.apply({"params": params}, z, method="latent")
  w, b = params["head"]["kernel"], params["head"]["bias"]
  np.testing.assert_allclose(got, z.reshape(2, -1) @ w + b, rtol=1e-5, atol=1e-5)
  # The image path ends in the same head, applied to the conv features (same flatten order).
  feats = x
  for i in range(2):
    k = params[f"convs_{i}"]
    feats = (
      jax.lax.conv_general_dilated(
        jnp.pad(feats, ((0, 0), (1, 1), (1, 1), (0, 0))),
        k["kernel"],
        (2, 2),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
      + k["bias"]
    )
    feats = jnp.where(feats > 0, feats, 0.01 * feats)
  np.testing.assert_allclose(
    clf.apply({"params": params}, x), feats.reshape(2, -1) @ w + b, rtol=1e-4, atol=1e-5
  )


def test_nearest_upsampling_repeats_pixels():
  x = jnp.arange(4.0).reshape(1, 2, 2, 1)
  up = np.asarray(models.upsample_nearest(x, 4))[0, :, :, 0]
  assert up.shape == (8, 8)
  np.testing.assert_array_equal(up[:4, :4], 0.0)
  np.testing.assert_array_equal(up[:4, 4:], 1.0)
  np.testing.assert_array_equal(up[4:, :4], 2.0)
  np.testing.assert_array_equal(up[4:, 4:], 3.0)


def test_instance_norm_normalises_each_image_and_channel():
  x = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 5, 3)), jnp.float32)
  norm = models.InstanceNorm()
  y = np.asarray(norm.apply(norm.init(jax.random.key(0), x), x))
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(1, 2)), 1.0, atol=1e-3)

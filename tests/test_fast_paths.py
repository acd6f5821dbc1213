"""The step's speed-ups compute the same model: each against its plain formulation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrdis import conv_kernels
from attrdis import models
from attrdis import train_state as ts
from attrdis import train_step as step_lib
from tiny import tiny_config

DN = ("NHWC", "HWIO", "NHWC")


def plain_upsample_conv(x, kernel, bias):
  """The decoder's up layer as written in the paper: nearest ×4, reflect pad 1, conv 3×3 s2."""
  up = models.reflect_pad(models.upsample_nearest(x, 4), 1)
  return (
    jax.lax.conv_general_dilated(
      up, kernel, (2, 2), "VALID", dimension_numbers=DN, precision=jax.lax.Precision.HIGHEST
    )
    + bias
  )


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 2), (2, 4, 4, 3)])
def test_fused_upsample_conv_is_exactly_the_resize_then_conv(shape):
  # Small integers: every product and sum is exact in float32, so both must agree bit for bit.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(-3, 4, shape), jnp.float32)
  kernel = jnp.asarray(rng.integers(-3, 4, (3, 3, shape[-1], 6)), jnp.float32)
  bias = jnp.asarray(rng.integers(-3, 4, (6,)), jnp.float32)
  for impl in ("xla", "gemm"):
    with conv_kernels.conv_implementation(impl):
      got = conv_kernels.UpsampleConv(6).apply({"params": {"kernel": kernel, "bias": bias}}, x)
    want = plain_upsample_conv(x, kernel, bias)
    assert got.shape == (shape[0], 2 * shape[1], 2 * shape[2], 6)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_fused_upsample_conv_gradients_and_init_match():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 4, 3, 5)), jnp.float32)
  conv = conv_kernels.UpsampleConv(4)
  params = conv.init(jax.random.key(3), x)["params"]
  ref = nn.Conv(4, (3, 3)).init(jax.random.key(3), x)["params"]  # same names, shapes, values
  for name in ("kernel", "bias"):
    np.testing.assert_array_equal(params[name], ref[name])
  params = dict(params, bias=jnp.asarray(rng.normal(size=(4,)), jnp.float32))
  cot = jnp.asarray(rng.normal(size=(2, 8, 6, 4)), jnp.float32)
  f_fused = lambda p, x: jnp.sum(conv.apply({"params": p}, x) * cot)
  f_plain = lambda p, x: jnp.sum(plain_upsample_conv(x, p["kernel"], p["bias"]) * cot)
  g_fused = jax.grad(f_fused, argnums=(0, 1))(params, x)
  g_plain = jax.grad(f_plain, argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", ["gemm", "winograd"])
@pytest.mark.parametrize(
  "shape,kernel,strides,padding",
  [
    ((2, 8, 8, 5), (3, 3), (1, 1), ((1, 1), (1, 1))),  # residual blocks (Winograd applies)
    ((2, 6, 10, 3), (3, 3), (1, 1), "VALID"),  # non-square, even outputs
    ((1, 7, 7, 4), (3, 3), (1, 1), "VALID"),  # odd outputs: Winograd falls back to im2col
    ((2, 8, 8, 5), (3, 3), (2, 2), "SAME"),  # encoder, TF 'SAME' (0 before, 1 after)
    ((2, 10, 10, 3), (4, 4), (2, 2), "VALID"),  # critic / classifier
    ((1, 12, 12, 2), (7, 7), (1, 1), "VALID"),  # enc-1 / output layer
  ],
)
def test_conv_algorithms_compute_the_same_convolution(impl, shape, kernel, strides, padding):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(
    rng.normal(size=(*kernel, shape[-1], 6)) / np.sqrt(np.prod(kernel) * shape[-1]), jnp.float32
  )

  def run(which):
    with conv_kernels.conv_implementation(which):
      f = lambda k, x: conv_kernels.conv2d(x, k, strides, padding)
      y = f(k, x)
      cot = jnp.asarray(np.random.default_rng(3).normal(size=y.shape), jnp.float32)
      return y, jax.grad(lambda k, x: jnp.sum(f(k, x) * cot), argnums=(0, 1))(k, x)

  with jax.default_matmul_precision("highest"):
    y_ref, g_ref = run("xla")
    y, g = run(impl)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_winograd_is_chosen_only_where_it_applies():
  f32, bf16 = jnp.float32, jnp.bfloat16
  on_cpu = jax.default_backend() == "cpu"
  big = conv_kernels.GEMM_MIN_MACS
  assert conv_kernels.resolve_conv_impl("auto", f32, (3, 3), (1, 1), (16, 16), big) == (
    "winograd" if on_cpu else "xla"
  )
  assert conv_kernels.resolve_conv_impl("auto", f32, (3, 3), (2, 2), (16, 16), big) == (
    "gemm" if on_cpu else "xla"
  )
  assert conv_kernels.resolve_conv_impl("auto", f32, (3, 3), (1, 1), (16, 16), big - 1) == "xla"
  assert conv_kernels.resolve_conv_impl("winograd", f32, (3, 3), (1, 1), (15, 16)) == "gemm"
  assert conv_kernels.resolve_conv_impl("winograd", f32, (3, 3), (2, 2), (16, 16)) == "gemm"
  assert conv_kernels.resolve_conv_impl("winograd", bf16, (3, 3), (1, 1), (16, 16)) == "gemm"
  with conv_kernels.conv_implementation("xla"):
    assert conv_kernels.resolve_conv_impl("auto", f32, (3, 3), (1, 1), (16, 16)) == "xla"
  with pytest.raises(ValueError, match="conv implementation"):
    with conv_kernels.conv_implementation("fft"):
      pass


def test_conv_module_has_nn_conv_parameters():
  x = jnp.zeros((1, 8, 8, 3))
  for kw in (
    dict(kernel_size=(3, 3), padding="VALID"),
    dict(kernel_size=(4, 4), strides=(2, 2), padding="VALID"),
    dict(kernel_size=(3, 3), strides=(2, 2), padding="SAME"),
  ):
    ours = conv_kernels.Conv(5, **kw).init(jax.random.key(0), x)
    ref = nn.Conv(5, **kw).init(jax.random.key(0), x)
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
      np.testing.assert_array_equal(a, b)
    with conv_kernels.conv_implementation("gemm"):
      y = conv_kernels.Conv(5, **kw).apply(ours, x + 1.0)
    np.testing.assert_allclose(y, nn.Conv(5, **kw).apply(ref, x + 1.0), rtol=1e-5, atol=1e-5)


def test_critic_both_sides_gives_each_side_its_own_gradient():
  critic = models.Critic(image_size=16, base_width=4)
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(-1, 1, (3, 16, 16, 3)), jnp.float32)
  params = critic.init(jax.random.key(0), x)["params"]
  apply = lambda p, img: critic.apply({"params": p}, img)
  sg = jax.lax.stop_gradient
  a, b = 0.7, -1.3  # arbitrary weights of the two outputs in a loss

  def fused(p, x):
    s_x, s_p = step_lib.critic_mean_both_sides(apply, p, x)
    return a * s_x + b * s_p, (s_x, s_p)

  def plain(p, x):
    s_x = jnp.mean(apply(sg(p), x))
    s_p = jnp.mean(apply(p, sg(x)))
    return a * s_x + b * s_p, (s_x, s_p)

  (gp_f, gx_f), (vx, vp) = jax.grad(fused, argnums=(0, 1), has_aux=True)(params, x)
  (gp_p, gx_p), _ = jax.grad(plain, argnums=(0, 1), has_aux=True)(params, x)
  want = float(jnp.mean(apply(params, x)))
  assert float(vx) == pytest.approx(want, rel=1e-6) and float(vp) == pytest.approx(want, rel=1e-6)
  np.testing.assert_allclose(gx_f, gx_p, rtol=1e-5, atol=1e-7)
  for u, v in zip(jax.tree.leaves(gp_f), jax.tree.leaves(gp_p)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(gx_f).max()) > 0


def test_latent_all_is_every_classifier_on_every_code():
  cls = models.Classifiers(num_classes=(3, 5), widths=(4, 8))
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  params = cls.init(jax.random.key(0), x)["params"]
  codes = [jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32) for _ in range(3)]
  got = cls.apply({"params": params}, codes, method="latent_all")
  assert len(got) == 3 and all(len(row) == 2 for row in got)
  for k, z in enumerate(codes):
    want = cls.apply({"params": params}, z, method="latent")
    for m in range(2):
      np.testing.assert_allclose(got[k][m], want[m], rtol=1e-5, atol=1e-6)


def test_fast_step_equals_the_plain_step():
  """compute_losses with XLA's convolutions vs the CPU algorithms (forced: the tiny model's
  convs are below the size at which "auto" uses them): same losses, same grads."""
  config = tiny_config(image_size=16, batch_size=4)
  models_ = ts.create_models(config, (5, 3))
  params = ts.create_train_state(models_, 0).params
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
  labels = [jnp.asarray(rng.integers(0, n, 4)) for n in (5, 3)]
  perms, alpha = step_lib.draw_randomness(jax.random.key(1), 4, 2)
  grad = jax.grad(step_lib.compute_losses, argnums=1, has_aux=True)
  out = {}
  for impl in ("xla", "winograd"):
    with conv_kernels.conv_implementation(impl), jax.default_matmul_precision("highest"):
      out[impl] = jax.jit(lambda p: grad(models_, p, x, labels, perms, alpha, config.loss_weights))(
        params
      )
  (g_xla, m_xla), (g_auto, m_auto) = out["xla"], out["winograd"]
  for k in m_xla:
    assert float(m_auto[k]) == pytest.approx(float(m_xla[k]), rel=1e-4, abs=1e-5), k
  for a, b in zip(jax.tree.leaves(g_auto), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)

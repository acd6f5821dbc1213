"""Each loss against a hand computation; the gradient penalty against finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrdis import losses
from attrdis import models


def log_softmax(v):
  v = np.asarray(v, np.float64)
  return v - math.log(sum(math.exp(a) for a in v))


def test_reconstruction_is_mean_absolute_error():
  x = np.array([[0.0, 1.0], [-1.0, 0.5]], np.float32)
  y = np.array([[0.5, 1.0], [1.0, 0.0]], np.float32)
  # |−0.5| + 0 + |−2| + |0.5| = 3 over 4 pixels
  assert float(losses.reconstruction_loss(x, y)) == pytest.approx(0.75)


def test_cross_entropy_by_hand():
  logits = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
  labels = np.array([1, 0])
  want = -(log_softmax(logits[0])[1] + log_softmax(logits[1])[0]) / 2
  assert float(losses.cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-6)


def test_uniform_cross_entropy_by_hand():
  logits = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
  want = -(sum(log_softmax(logits[0])) / 3 + sum(log_softmax(logits[1])) / 3) / 2
  assert float(losses.uniform_cross_entropy(logits)) == pytest.approx(want, rel=1e-6)
  # A uniform posterior attains the minimum, log(k).
  assert float(losses.uniform_cross_entropy(np.zeros((2, 5), np.float32))) == pytest.approx(
    math.log(5), rel=1e-6
  )


def test_classification_loss_is_mean_over_attributes():
  l1 = np.array([[2.0, 0.0]], np.float32)
  l2 = np.array([[0.0, 1.0, 0.0]], np.float32)
  want = (-log_softmax(l1[0])[1] - log_softmax(l2[0])[2]) / 2
  got = losses.classification_loss([l1, l2], [np.array([1]), np.array([2])])
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_disentanglement_loss_by_hand_m2():
  rng = np.random.default_rng(0)
  sizes = (3, 4)  # |m| for the two attributes
  # latent[k][m]: classifier m on code k (k = 0, 1 attribute codes, k = 2 is z_0)
  latent = [[rng.normal(size=(2, sizes[m])).astype(np.float32) for m in range(2)] for _ in range(3)]

  def ce_u(l):  # CE(uniform, softmax), mean over the batch, by hand
    return float(np.mean([-np.mean(log_softmax(row)) for row in l]))

  z1_term = ce_u(latent[0][1])  # z_1: only the other classifier, C_2
  z2_term = ce_u(latent[1][0])  # z_2: only C_1
  z0_term = (ce_u(latent[2][0]) + ce_u(latent[2][1])) / 2  # z_0: every classifier
  want = (z1_term + z2_term + z0_term) / 3
  assert float(losses.disentanglement_loss(latent)) == pytest.approx(want, rel=1e-5)


def test_disentanglement_loss_m1_has_only_the_rest_term():
  latent = [[np.array([[5.0, 0.0]], np.float32)], [np.array([[1.0, 3.0]], np.float32)]]
  want = -np.mean(log_softmax([1.0, 3.0]))
  assert float(losses.disentanglement_loss(latent)) == pytest.approx(want, rel=1e-6)


def test_wasserstein_terms():
  d_real = np.array([[1.0], [3.0]], np.float32)
  d_fake = np.array([[0.5], [-0.5]], np.float32)
  assert float(losses.generator_adversarial_loss(d_fake)) == pytest.approx(0.0)
  assert float(losses.generator_adversarial_loss(d_real)) == pytest.approx(-2.0)
  assert float(losses.critic_wasserstein_loss(d_real, d_fake)) == pytest.approx(-2.0)


def test_interpolate():
  x = np.zeros((2, 1, 1, 1), np.float32)
  y = np.ones((2, 1, 1, 1), np.float32)
  out = losses.interpolate(x, y, np.array([0.25, 1.0], np.float32))
  np.testing.assert_allclose(np.asarray(out).ravel(), [0.25, 1.0])


def test_gradient_penalty_matches_finite_differences():
  critic = models.Critic(image_size=8, base_width=4, dtype=jnp.float64)
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 3)))
    params = critic.init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda p: p.astype(jnp.float64) * 3.0, params)
    f = lambda img: critic.apply({"params": params}, img)
    gp = float(losses.gradient_penalty(f, x))

    # Central differences of Σ D(x_i) for every coordinate of every image.
    eps = 1e-5
    n = x[0].size
    basis = jnp.eye(n, dtype=jnp.float64).reshape(n, 8, 8, 3) * eps
    norms = []
    for i in range(2):
      plus = jnp.sum(f(x[i][None] + basis), axis=(1, 2, 3))
      minus = jnp.sum(f(x[i][None] - basis), axis=(1, 2, 3))
      grad = (plus - minus) / (2 * eps)
      norms.append(float(jnp.linalg.norm(grad)))
    want = float(np.mean([(g - 1.0) ** 2 for g in norms]))
  assert abs(norms[0] - 1.0) > 1e-3  # the penalty is not trivially zero
  assert gp == pytest.approx(want, rel=1e-6)

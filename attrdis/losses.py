"""Each loss of docs/design.md §2.2 as a small pure function (weights λ are applied by the step).

Conventions: logits are (b, classes) float32; labels are int (b,); codes are
``[z_1, ..., z_M, z_0]``; ``latent_logits[k][m]`` is C_{m+1} applied to code k through its
latent entry (k = 0..M-1 for z_1..z_M, k = M for z_0).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from attrdis.models import at_least_f32 as f32


def reconstruction_loss(x: jax.Array, x_rec: jax.Array) -> jax.Array:
  """Eq. 2: mean absolute error over all pixels (the released code's mean)."""
  return jnp.mean(jnp.abs(f32(x) - f32(x_rec)))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean over the batch of −log softmax(logits)[label]."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f32(logits), labels))


def uniform_cross_entropy(logits: jax.Array) -> jax.Array:
  """CE(uniform over the classes, softmax(logits)), mean over the batch."""
  return -jnp.mean(jax.nn.log_softmax(f32(logits), axis=-1))


def classification_loss(logits: Sequence[jax.Array], labels: Sequence[jax.Array]) -> jax.Array:
  """mean_m CE(logits_m, y_m): L_cls^c (images), L_cls^x (codes, Eq. 3), L_cls^x̃ (Eq. 6)."""
  return sum(cross_entropy(l, y) for l, y in zip(logits, labels)) / len(logits)


def disentanglement_loss(latent_logits: Sequence[Sequence[jax.Array]]) -> jax.Array:
  """Eq. 4, averaged over the M+1 codes.

  For z_m (m = 1..M): mean over m' ≠ m of CE(uniform, C_{m'}(z_m)); for z_0: mean over all m
  of CE(uniform, C_m(z_0)). With M = 1 only the z_0 term exists.
  """
  num_attributes = len(latent_logits) - 1
  terms = []
  for k in range(num_attributes):
    others = [uniform_cross_entropy(latent_logits[k][m]) for m in range(num_attributes) if m != k]
    if others:
      terms.append(sum(others) / len(others))
  terms.append(
    sum(uniform_cross_entropy(l) for l in latent_logits[num_attributes]) / num_attributes
  )
  return sum(terms) / len(terms)


def generator_adversarial_loss(d_fake: jax.Array) -> jax.Array:
  """L_adv^G = −mean D(X_trn)."""
  return -jnp.mean(f32(d_fake))


def critic_wasserstein_loss(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """−(mean D(X) − mean D(X_trn)), the critic's loss without the penalty."""
  return -(jnp.mean(f32(d_real)) - jnp.mean(f32(d_fake)))


def interpolate(x_real: jax.Array, x_fake: jax.Array, alpha: jax.Array) -> jax.Array:
  """x̂ = X + α (X_trn − X), α of shape (b,)."""
  alpha = alpha.reshape((-1,) + (1,) * (x_real.ndim - 1)).astype(x_real.dtype)
  return x_real + alpha * (x_fake - x_real)


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], x_hat: jax.Array) -> jax.Array:
  """mean_i (‖∇_x̂ Σ D(x̂_i)‖₂ − 1)², the gradient taken with ``jax.grad`` (double backprop).

  ``critic_fn`` maps images to patch scores; the scores of one image are summed, so the
  gradient of each image is its own (samples do not interact in the critic). The norm is
  taken in float32.
  """
  grads = jax.grad(lambda xh: jnp.sum(f32(critic_fn(xh))))(x_hat)
  grads = f32(grads).reshape(grads.shape[0], -1)
  norms = jnp.sqrt(jnp.sum(grads * grads, axis=-1) + 1e-12)
  return jnp.mean((norms - 1.0) ** 2)

"""The train step: routing of the three gradients, permutations, purity, data parallelism."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attrdis import losses
from attrdis import sampling
from attrdis import train_state as ts
from attrdis import train_step as step_lib
from tiny import tiny_config

NUM_CLASSES = (5, 3)


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  models = ts.create_models(config, NUM_CLASSES, num_train_steps=10)
  state = ts.create_train_state(models, config.seed)
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32),
    "label": np.stack([rng.integers(0, n, 8) for n in NUM_CLASSES], 1).astype(np.int32),
  }
  return config, models, state, batch


def test_permutations_one_per_attribute_and_rest_untouched():
  perms, alpha = step_lib.draw_randomness(jax.random.key(3), 16, 3)
  perms = [np.asarray(p) for p in perms]
  for p in perms:
    assert sorted(p.tolist()) == list(range(16))
  assert not np.array_equal(perms[0], perms[1]) and not np.array_equal(perms[1], perms[2])
  assert alpha.shape == (16,) and 0 <= float(alpha.min()) and float(alpha.max()) <= 1
  codes = [jnp.arange(16.0) + 100 * k for k in range(4)]  # z_1, z_2, z_3, z_0
  out = step_lib.permute_codes(codes, perms)
  for m in range(3):
    np.testing.assert_array_equal(out[m], np.arange(16.0)[perms[m]] + 100 * m)
  np.testing.assert_array_equal(out[3], codes[3])  # z_0 never permuted


def test_randomness_is_folded_from_seed_and_step():
  a, _ = step_lib.draw_randomness(step_lib.step_key(0, jnp.int32(5)), 16, 2)
  b, _ = step_lib.draw_randomness(step_lib.step_key(0, jnp.int32(5)), 16, 2)
  c, _ = step_lib.draw_randomness(step_lib.step_key(0, jnp.int32(6)), 16, 2)
  d, _ = step_lib.draw_randomness(step_lib.step_key(1, jnp.int32(5)), 16, 2)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_step_decodes_the_permuted_codes(setup):
  config, models, state, batch = setup
  x = jnp.asarray(batch["image"])
  labels = [jnp.asarray(batch["label"][:, m]) for m in range(2)]
  perms, alpha = step_lib.draw_randomness(jax.random.key(7), 8, 2)
  # Jitted (compiled once, and cached): run op by op, the gradient penalty's double backward
  # takes seconds.
  _, metrics = jax.jit(
    lambda p: step_lib.compute_losses(models, p, x, labels, perms, alpha, config.loss_weights)
  )(state.params)
  gen = state.params["gen"]
  codes = sampling.encode(models, gen, x)
  x_trn = sampling.decode(models, gen, [codes[0][perms[0]], codes[1][perms[1]], codes[2]])
  logits = models.cls.apply({"params": state.params["cls"]}, x_trn)
  want = losses.classification_loss(logits, [labels[0][perms[0]], labels[1][perms[1]]])
  assert float(metrics["cls_trn"]) == pytest.approx(float(want), rel=1e-5)
  d_fake = models.critic.apply({"params": state.params["critic"]}, x_trn)
  assert float(metrics["adv_g"]) == pytest.approx(-float(jnp.mean(d_fake)), rel=1e-5)
  x_rec = sampling.decode(models, gen, codes)
  assert float(metrics["rec"]) == pytest.approx(
    float(losses.reconstruction_loss(x, x_rec)), rel=1e-5
  )


def test_per_attribute_accuracies_by_hand(setup):
  """acc_real/<a>, acc_latent/<a>, acc_trn/<a>: argmax of each classifier on the real images,
  on its own code, on the shuffled synthesis, against the (shuffled) labels; the plain
  acc_* are their means."""
  config, models, state, batch = setup
  x = jnp.asarray(batch["image"])
  # Labels that the untrained classifiers get partly right, so that the counts are not 0.
  cls = state.params["cls"]
  real_logits = models.cls.apply({"params": cls}, x)
  labels = [jnp.argmax(real_logits[0], -1), jnp.asarray(batch["label"][:, 1])]
  perms, alpha = step_lib.draw_randomness(jax.random.key(5), 8, 2)
  names = ("identity", "expression")
  _, metrics = step_lib.compute_losses(
    models, state.params, x, labels, perms, alpha, config.loss_weights, names
  )
  gen = state.params["gen"]
  codes = sampling.encode(models, gen, x)
  x_trn = sampling.decode(models, gen, [codes[0][perms[0]], codes[1][perms[1]], codes[2]])
  trn_logits = models.cls.apply({"params": cls}, x_trn)
  for m, a in enumerate(names):
    latent = models.cls.apply({"params": cls}, codes[m], m, method="latent_one")
    want = {
      "acc_real": np.mean(np.argmax(real_logits[m], -1) == np.asarray(labels[m])),
      "acc_latent": np.mean(np.argmax(latent, -1) == np.asarray(labels[m])),
      "acc_trn": np.mean(np.argmax(trn_logits[m], -1) == np.asarray(labels[m])[perms[m]]),
    }
    for k, v in want.items():
      # A count of 8 images: exact multiples of 1/8.
      assert float(metrics[f"{k}/{a}"]) == v, (k, a)
  assert float(metrics["acc_real/identity"]) == 1.0  # the labels were its own argmax
  for k in ("acc_real", "acc_latent", "acc_trn"):
    assert float(metrics[k]) == pytest.approx(
      (float(metrics[f"{k}/identity"]) + float(metrics[f"{k}/expression"])) / 2, abs=1e-7
    )


def test_each_group_gets_exactly_its_own_loss_gradient(setup):
  config, models, state, batch = setup
  x = jnp.asarray(batch["image"])
  labels = [jnp.asarray(batch["label"][:, m]) for m in range(2)]
  perms, alpha = step_lib.draw_randomness(jax.random.key(1), 8, 2)
  args = (x, labels, perms, alpha, config.loss_weights)
  combined = jax.jit(
    lambda p: jax.grad(step_lib.compute_losses, argnums=1, has_aux=True)(models, p, *args)[0]
  )(state.params)

  def loss_of(group, name):
    def f(p):
      params = dict(state.params, **{group: p})
      return step_lib.compute_losses(models, params, *args)[1][name]

    return jax.jit(jax.grad(f))(state.params[group])

  for group, name in (("gen", "loss_g"), ("critic", "loss_d"), ("cls", "loss_c")):
    want = loss_of(group, name)
    for a, b in zip(jax.tree.leaves(combined[group]), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  # The generator's loss has a critic term; it must not leak into the critic's gradient.
  g_on_critic = loss_of("critic", "adv_g")
  assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(g_on_critic)) == 0.0


def test_step_updates_all_groups_and_is_pure(setup):
  config, models, state, batch = setup
  mesh = step_lib.make_mesh(jax.devices()[:1])
  replicated, _ = step_lib.shardings(mesh)
  fn = step_lib.jit_train_step(models, config, mesh, ts.learning_rate_schedule(config, 10))
  copy = lambda: jax.device_put(jax.tree.map(jnp.array, state), replicated)
  s1, m1 = fn(copy(), batch)
  s2, m2 = fn(copy(), batch)
  assert int(s1.step) == 1
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_array_equal(a, b)
  for g in ts.GROUPS:
    moved = [
      float(jnp.abs(a - b).max())
      for a, b in zip(jax.tree.leaves(s1.params[g]), jax.tree.leaves(state.params[g]))
    ]
    assert max(moved) > 0, g
  expected = {
    "loss_g",
    "loss_d",
    "loss_c",
    "rec",
    "cls_x",
    "dis",
    "cls_trn",
    "adv_g",
    "wasserstein",
    "gp",
    "acc_real",
    "acc_latent",
    "acc_trn",
    "learning_rate",
  }
  expected |= {
    f"{k}/{a}" for k in ("acc_real", "acc_latent", "acc_trn") for a in config.dataset.attributes
  }
  assert expected <= set(m1)
  assert all(np.isfinite(float(v)) for v in m1.values())
  assert float(m1["learning_rate"]) == pytest.approx(config.optimizer.learning_rate)


def test_four_devices_equal_one_device(setup):
  """Same global batch and key on 1 and on 4 devices: the same averaged gradients.

  Plain SGD (lr 1) makes the update the gradient itself; Adam would turn the float noise
  in the exactly-zero gradients of conv biases before instance norm into ±lr steps.
  """
  config, models, _, batch = setup
  assert jax.device_count() >= 4
  models = dataclasses.replace(models, txs={g: optax.sgd(1.0) for g in ts.GROUPS})
  state = ts.create_train_state(models, config.seed)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    mesh = step_lib.make_mesh(devices)
    replicated, data = step_lib.shardings(mesh)
    fn = step_lib.jit_train_step(models, config, mesh)
    s = jax.device_put(jax.tree.map(jnp.array, state), replicated)
    b = jax.device_put(batch, data)
    s, m = fn(s, b)
    results.append((jax.device_get(s), jax.device_get(m)))
  (s1, m1), (s4, m4) = results
  for a, b, p0 in zip(
    jax.tree.leaves(s1.params), jax.tree.leaves(s4.params), jax.tree.leaves(state.params)
  ):
    np.testing.assert_allclose(a - p0, b - p0, rtol=1e-3, atol=1e-6)
  for k in m1:
    assert float(m1[k]) == pytest.approx(float(m4[k]), rel=1e-4, abs=1e-6), k


def test_learning_rate_schedule_constant_then_linear_to_zero():
  config = tiny_config()
  config.optimizer.learning_rate = 1.0
  config.optimizer.decay_fraction = 0.25
  sched = ts.learning_rate_schedule(config, 100)
  assert float(sched(0)) == 1.0 and float(sched(74)) == 1.0
  assert float(sched(75)) == pytest.approx(1.0)
  assert float(sched(85)) == pytest.approx(1.0 - 10 / 25)
  assert float(sched(100)) == pytest.approx(0.0)

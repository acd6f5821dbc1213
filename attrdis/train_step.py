"""One training iteration (DESIGN.md §2) as one pure function, jitted data-parallel.

All three gradients are taken at the same parameters from one forward pass: the losses
are summed into one scalar in which each parameter group sees only its own loss
(``stop_gradient`` on the other groups' parameters and on X_trn in the critic's loss), so a
single ``jax.grad`` gives ∂L_G/∂gen, ∂L_D/∂critic and ∂L_C/∂cls. Randomness comes from
``fold_in(key(seed), step)``: the step is a pure function of (state, batch).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from attrdis import losses
from attrdis.train_state import GROUPS, Models, TrainState

DATA_AXIS = "data"


def step_key(seed: int, step: jax.Array) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), step)


def draw_randomness(key: jax.Array, batch_size: int, num_attributes: int):
  """One permutation of the batch per attribute (z_0 is never permuted) and the GP's α."""
  perm_keys = jax.random.split(jax.random.fold_in(key, 0), num_attributes)
  perms = [jax.random.permutation(k, batch_size) for k in perm_keys]
  alpha = jax.random.uniform(jax.random.fold_in(key, 1), (batch_size,))
  return perms, alpha


def permute_codes(codes, perms):
  """[z_1[r_1], ..., z_M[r_M], z_0]: each attribute code shuffled by its own permutation."""
  return [z[r] for z, r in zip(codes[:-1], perms)] + [codes[-1]]


def compute_losses(models: Models, params: dict, x: jax.Array, labels: list[jax.Array],
                   perms: list[jax.Array], alpha: jax.Array, weights):
  """Every loss term; returns (total for jax.grad, metrics). See the module docstring."""
  sg = jax.lax.stop_gradient
  gen, critic, cls = params["gen"], params["critic"], params["cls"]
  M = models.num_attributes
  apply_critic = lambda p, img: models.critic.apply({"params": p}, img)
  cls_latent = lambda z: models.cls.apply({"params": sg(cls)}, z, method="latent")

  codes = models.gen.apply({"params": gen}, x, method="encode")
  x_rec = models.gen.apply({"params": gen}, codes, method="decode")
  x_trn = models.gen.apply({"params": gen}, permute_codes(codes, perms), method="decode")
  labels_trn = [y[r] for y, r in zip(labels, perms)]

  # Encoders + decoder (critic and classifiers frozen in these terms).
  latent_logits = [cls_latent(z) for z in codes]  # [code k][classifier m]
  rec = losses.reconstruction_loss(x, x_rec)
  cls_x = losses.classification_loss([latent_logits[m][m] for m in range(M)], labels)
  dis = losses.disentanglement_loss(latent_logits)
  trn_logits = models.cls.apply({"params": sg(cls)}, x_trn)
  cls_trn = losses.classification_loss(trn_logits, labels_trn)
  adv_g = losses.generator_adversarial_loss(apply_critic(sg(critic), x_trn))
  loss_g = (weights.adv * adv_g + weights.rec * rec + weights.cls_trn * cls_trn
            + weights.cls_x * cls_x + weights.dis * dis)

  # Critic (the synthesis is data here).
  x_fake = sg(x_trn)
  wasserstein = losses.critic_wasserstein_loss(apply_critic(critic, x),
                                               apply_critic(critic, x_fake))
  gp = losses.gradient_penalty(lambda xh: apply_critic(critic, xh),
                               losses.interpolate(x, x_fake, alpha))
  loss_d = wasserstein + weights.gp * gp

  # Classifiers, on real images only.
  real_logits = models.cls.apply({"params": cls}, x)
  loss_c = losses.classification_loss(real_logits, labels)

  def accuracy(logits, ys):
    return sum(jnp.mean(jnp.argmax(l, -1) == y) for l, y in zip(logits, ys)) / len(ys)

  metrics = {
      "loss_g": loss_g, "loss_d": loss_d, "loss_c": loss_c,
      "rec": rec, "cls_x": cls_x, "dis": dis, "cls_trn": cls_trn, "adv_g": adv_g,
      "wasserstein": wasserstein, "gp": gp,
      "acc_real": accuracy(real_logits, labels),
      "acc_latent": accuracy([latent_logits[m][m] for m in range(M)], labels),
      "acc_trn": accuracy(trn_logits, labels_trn),
  }
  return loss_g + loss_d + loss_c, metrics


def train_step(state: TrainState, batch: dict, *, models: Models,
               config: ml_collections.ConfigDict, schedule=None):
  """(state, batch) → (new state, metrics). ``batch``: image (b,S,S,3), label (b,M)."""
  x = batch["image"]
  labels = [batch["label"][:, m] for m in range(models.num_attributes)]
  perms, alpha = draw_randomness(step_key(config.seed, state.step), x.shape[0],
                                 models.num_attributes)
  grad_fn = jax.grad(compute_losses, argnums=1, has_aux=True)
  grads, metrics = grad_fn(models, state.params, x, labels, perms, alpha, config.loss_weights)

  new_params, new_opt_state = {}, {}
  for g in GROUPS:
    updates, new_opt_state[g] = models.txs[g].update(grads[g], state.opt_state[g],
                                                     state.params[g])
    new_params[g] = optax.apply_updates(state.params[g], updates)
  if schedule is not None:
    metrics["learning_rate"] = schedule(state.step)
  new_state = state.replace(step=state.step + 1, params=new_params, opt_state=new_opt_state)
  return new_state, metrics


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def shardings(mesh: jax.sharding.Mesh):
  """(replicated, batch-sharded) NamedShardings."""
  return NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))


def jit_train_step(models: Models, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh, schedule=None):
  """The train step jitted once over the mesh: batch split over devices, state replicated,
  gradients averaged across devices by XLA's partitioner; the old state is donated."""
  replicated, data = shardings(mesh)
  fn = functools.partial(train_step, models=models, config=config, schedule=schedule)
  return jax.jit(fn, in_shardings=(replicated, data), out_shardings=(replicated, replicated),
                 donate_argnums=(0,))

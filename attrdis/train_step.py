"""One training iteration (docs/design.md §2) as one pure function, jitted data-parallel.

All three gradients are taken at the same parameters from one forward pass: the losses
are summed into one scalar in which each parameter group sees only its own loss
(``stop_gradient`` on the other groups' parameters and on X_trn in the critic's loss), so a
single ``jax.grad`` gives ∂L_G/∂gen, ∂L_D/∂critic and ∂L_C/∂cls. Randomness comes from
``fold_in(key(seed), step)``: the step is a pure function of (state, batch).

Work is not repeated: the encoders run once; X_rec and X_trn come from one decoder call on
the stacked codes; the classifiers' latent heads run once per classifier on all codes; and
the critic's pass over X_trn serves both L_adv^G and L_D (:func:`critic_mean_both_sides`).
"""

from __future__ import annotations

import collections
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def critic_mean_both_sides(apply_fn, params, x):
  """``(mean D_{sg(params)}(x), mean D_{params}(sg(x)))``: the critic's mean score on x, once
  as the generator's term (gradient to x only) and once as the critic's (gradient to the
  params only), from one forward and one backward pass.

  Both outputs are the same scalar s; the backward pass of s with cotangent 1 gives ∂s/∂x and
  ∂s/∂params together, and by linearity each output's cotangent scales its own half. Without
  this the critic runs forward twice on x, and back through all its layers twice.
  """
  s = jnp.mean(losses.f32(apply_fn(params, x)))
  return s, s


def _critic_mean_fwd(apply_fn, params, x):
  s, vjp = jax.vjp(lambda p, xx: jnp.mean(losses.f32(apply_fn(p, xx))), params, x)
  return (s, s), vjp


def _critic_mean_bwd(apply_fn, vjp, cotangents):
  del apply_fn
  g_x, g_params = cotangents  # the first output feeds x's gradient, the second the params'
  d_params, d_x = vjp(jnp.ones_like(g_x))
  d_params = jax.tree.map(lambda d: (d * g_params).astype(d.dtype), d_params)
  return d_params, (d_x * g_x).astype(d_x.dtype)


critic_mean_both_sides.defvjp(_critic_mean_fwd, _critic_mean_bwd)


def compute_losses(
  models: Models,
  params: dict,
  x: jax.Array,
  labels: list[jax.Array],
  perms: list[jax.Array],
  alpha: jax.Array,
  weights,
  attributes: tuple[str, ...] | None = None,
):
  """Every loss term; returns (total for jax.grad, metrics). See the module docstring.

  ``attributes`` names the M attributes: the metrics then also hold each accuracy per
  attribute (``acc_real/<attribute>``, ``acc_latent/<attribute>``, ``acc_trn/<attribute>``)."""
  sg = jax.lax.stop_gradient
  gen, critic, cls = params["gen"], params["critic"], params["cls"]
  M = models.num_attributes
  apply_critic = lambda p, img: models.critic.apply({"params": p}, img)

  codes = models.gen.apply({"params": gen}, x, method="encode")
  # X_rec and X_trn in one decoder call (batch 2b; every layer acts per image).
  both = [
    jnp.concatenate([z, z_trn], axis=0) for z, z_trn in zip(codes, permute_codes(codes, perms))
  ]
  x_rec, x_trn = jnp.split(models.gen.apply({"params": gen}, both, method="decode"), 2)
  labels_trn = [y[r] for y, r in zip(labels, perms)]

  # Encoders + decoder (critic and classifiers frozen in these terms).
  latent_logits = models.cls.apply(
    {"params": sg(cls)}, codes, method="latent_all"
  )  # [code k][classifier m]
  rec = losses.reconstruction_loss(x, x_rec)
  cls_x = losses.classification_loss([latent_logits[m][m] for m in range(M)], labels)
  dis = losses.disentanglement_loss(latent_logits)
  trn_logits = models.cls.apply({"params": sg(cls)}, x_trn)
  cls_trn = losses.classification_loss(trn_logits, labels_trn)
  # D(X_trn): one pass serves L_adv^G (gradient to X_trn) and L_D (gradient to the critic).
  d_fake_g, d_fake_d = critic_mean_both_sides(apply_critic, critic, x_trn)
  adv_g = losses.generator_adversarial_loss(d_fake_g)
  loss_g = (
    weights.adv * adv_g
    + weights.rec * rec
    + weights.cls_trn * cls_trn
    + weights.cls_x * cls_x
    + weights.dis * dis
  )

  # Critic (the synthesis is data here).
  x_fake = sg(x_trn)
  wasserstein = losses.critic_wasserstein_loss(apply_critic(critic, x), d_fake_d)
  gp = losses.gradient_penalty(
    lambda xh: apply_critic(critic, xh), losses.interpolate(x, x_fake, alpha)
  )
  loss_d = wasserstein + weights.gp * gp

  # Classifiers, on real images only.
  real_logits = models.cls.apply({"params": cls}, x)
  loss_c = losses.classification_loss(real_logits, labels)

  def per_attribute(logits, ys):
    return [jnp.mean(jnp.argmax(l, -1) == y) for l, y in zip(logits, ys)]

  accuracies = {
    "acc_real": per_attribute(real_logits, labels),
    "acc_latent": per_attribute([latent_logits[m][m] for m in range(M)], labels),
    "acc_trn": per_attribute(trn_logits, labels_trn),
  }
  metrics = {
    "loss_g": loss_g,
    "loss_d": loss_d,
    "loss_c": loss_c,
    "rec": rec,
    "cls_x": cls_x,
    "dis": dis,
    "cls_trn": cls_trn,
    "adv_g": adv_g,
    "wasserstein": wasserstein,
    "gp": gp,
  }
  for name, accs in accuracies.items():
    metrics[name] = sum(accs) / M
    for a, acc in zip(attributes or (), accs):
      metrics[f"{name}/{a}"] = acc
  return loss_g + loss_d + loss_c, metrics


# The float32 value of each uint8 pixel, computed as the host's ``to_model_image`` does.
PIXEL_VALUES = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def model_images(images: jax.Array) -> jax.Array:
  """The networks' inputs: uint8 pixels mapped to [-1, 1] in float32 by a 256-entry table,
  so that they are bit for bit what the input pipeline's ``to_model_image`` makes on the host
  (an on-device ``x / 127.5 - 1`` may be contracted to a fused multiply-add, one rounding
  apart, differently in differently partitioned programs); float images are taken as already
  scaled."""
  if images.dtype == jnp.uint8:
    return jnp.asarray(PIXEL_VALUES)[images.astype(jnp.int32)]
  return images


def train_step(
  state: TrainState,
  batch: dict,
  *,
  models: Models,
  config: ml_collections.ConfigDict,
  schedule=None,
):
  """(state, batch) → (new state, metrics). ``batch``: image (b,S,S,3) uint8 pixels or float
  in [-1, 1], label (b,M)."""
  x = model_images(batch["image"])
  labels = [batch["label"][:, m] for m in range(models.num_attributes)]
  perms, alpha = draw_randomness(
    step_key(config.seed, state.step), x.shape[0], models.num_attributes
  )
  grad_fn = jax.grad(compute_losses, argnums=1, has_aux=True)
  grads, metrics = grad_fn(
    models,
    state.params,
    x,
    labels,
    perms,
    alpha,
    config.loss_weights,
    tuple(config.dataset.attributes),
  )

  new_params, new_opt_state = {}, {}
  for g in GROUPS:
    updates, new_opt_state[g] = models.txs[g].update(grads[g], state.opt_state[g], state.params[g])
    new_params[g] = optax.apply_updates(state.params[g], updates)
  if schedule is not None:
    metrics["learning_rate"] = schedule(state.step)
  new_state = state.replace(step=state.step + 1, params=new_params, opt_state=new_opt_state)
  return new_state, metrics


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh(
    (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def shardings(mesh: jax.sharding.Mesh):
  """(replicated, batch-sharded) NamedShardings."""
  return NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))


def prefetch_to_device(batches, sharding, size: int = 2):
  """Yields host (numpy) batches as global device arrays, ``size`` batches ahead: the
  host-to-device copies of the next batches run while the current step computes. (A grain
  iterator checkpointed meanwhile is ``size`` batches ahead of the step.)"""
  it = iter(batches)
  put = lambda b: jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), b)
  queue = collections.deque(put(b) for b in itertools.islice(it, size))
  while queue:
    yield queue.popleft()
    queue.extend(put(b) for b in itertools.islice(it, 1))


def finite_guard(step_fn):
  """Wraps ``step_fn(state, batch) -> (state, metrics)``: a step with a NaN or inf among its
  metrics (the loss terms) keeps the old params and optimizer states (only the step counter
  advances) and reports ``metrics['nonfinite'] = 1.0`` (else 0.0). The flag stays on device
  and the training loop reads it with the other metrics: no host sync per step. (Checking
  the new state here too made XLA's compile 4x slower; the loop checks the state with a
  separate small jitted function instead.)"""

  def guarded(state, batch):
    new_state, metrics = step_fn(state, batch)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    keep = lambda new, old: jnp.where(ok, new, old)
    out = new_state.replace(
      params=jax.tree.map(keep, new_state.params, state.params),
      opt_state=jax.tree.map(keep, new_state.opt_state, state.opt_state),
    )
    return out, dict(metrics, nonfinite=1.0 - ok.astype(jnp.float32))

  return guarded


def jit_train_step(
  models: Models, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, schedule=None
):
  """The train step jitted once over the mesh: batch split over devices, state replicated,
  gradients averaged across devices by XLA's partitioner; the old state is donated.
  Non-finite steps are flagged and not applied (:func:`finite_guard`)."""
  replicated, data = shardings(mesh)
  fn = finite_guard(functools.partial(train_step, models=models, config=config, schedule=schedule))
  return jax.jit(
    fn, in_shardings=(replicated, data), out_shardings=(replicated, replicated), donate_argnums=(0,)
  )

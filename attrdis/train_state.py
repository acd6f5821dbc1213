"""The model bundle built from a config, the train state and the three optimizers."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from attrdis import models as models_lib

GROUPS = ("gen", "critic", "cls")


@dataclasses.dataclass(frozen=True)
class Models:
  """The three modules (one per parameter group) and their optimizers. Static: no arrays."""

  gen: models_lib.Generator
  critic: models_lib.Critic
  cls: models_lib.Classifiers
  txs: Any  # {'gen': GradientTransformation, 'critic': ..., 'cls': ...}
  num_classes: tuple[int, ...]
  image_size: int

  @property
  def num_attributes(self) -> int:
    return len(self.num_classes)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: the number of updates applied
  params: Any  # {'gen': ..., 'critic': ..., 'cls': ...}
  opt_state: Any  # the same keys


def compute_dtype(config: ml_collections.ConfigDict):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]


def learning_rate_schedule(config: ml_collections.ConfigDict, num_train_steps: int):
  """The paper's schedule: constant, then linear decay to 0 over the last decay_fraction."""
  lr = config.optimizer.learning_rate
  decay_steps = int(round(num_train_steps * config.optimizer.decay_fraction))
  if decay_steps <= 0:
    return optax.constant_schedule(lr)
  return optax.join_schedules(
    [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, decay_steps)],
    [num_train_steps - decay_steps],
  )


def create_models(
  config: ml_collections.ConfigDict, num_classes: Sequence[int], num_train_steps: int = 1
) -> Models:
  m, dtype = config.model, compute_dtype(config)
  schedule = learning_rate_schedule(config, num_train_steps)
  tx = lambda: optax.adam(schedule, b1=config.optimizer.b1, b2=config.optimizer.b2)
  return Models(
    gen=models_lib.Generator(
      num_attributes=len(num_classes),
      encoder_widths=tuple(m.encoder_widths),
      num_res_blocks=m.num_res_blocks,
      decoder_up_widths=tuple(m.decoder_up_widths),
      wide_decoder=m.wide_decoder,
      norm=m.norm,
      dtype=dtype,
    ),
    critic=models_lib.Critic(
      image_size=config.image_size,
      base_width=m.critic_base_width,
      max_blocks=m.critic_max_blocks,
      dtype=dtype,
    ),
    cls=models_lib.Classifiers(
      num_classes=tuple(num_classes),
      widths=tuple(m.classifier_widths),
      leaky=m.classifier_leaky_relu,
      dtype=dtype,
    ),
    txs={g: tx() for g in GROUPS},
    num_classes=tuple(int(n) for n in num_classes),
    image_size=config.image_size,
  )


def init_params(models: Models, key: jax.Array) -> dict:
  x = jnp.zeros((1, models.image_size, models.image_size, 3), jnp.float32)
  k_gen, k_critic, k_cls = jax.random.split(key, 3)
  return {
    "gen": models.gen.init(k_gen, x)["params"],
    "critic": models.critic.init(k_critic, x)["params"],
    "cls": models.cls.init(k_cls, x)["params"],
  }


def init_key(seed: int) -> jax.Array:
  """The key that initialises the params: an ``rbg`` key, whose initialisers compile in a
  fraction of threefry's time (init runs unsharded, so its values do not depend on the
  device count; the train step's own randomness uses sharding-invariant threefry keys)."""
  return jax.random.key(seed, impl="rbg")


def create_train_state(models: Models, seed: int) -> TrainState:
  """Params from the seed, fresh optimizer states, step 0. Jitted."""

  def init(key):
    params = init_params(models, key)
    opt_state = {g: models.txs[g].init(params[g]) for g in GROUPS}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)

  return jax.jit(init)(init_key(seed))

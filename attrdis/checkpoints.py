"""Orbax checkpoints in ``workdir/checkpoints``: train state, grain iterator state, config.

Each step's checkpoint holds three items: ``state`` (params and the three optimizer
states, restored into the same pytree), ``data`` (the grain iterator's position) and
``config`` (JSON, so that sampling and evaluation can rebuild the model from the
workdir alone, and a restart can refuse an incompatible config).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain.python as grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from attrdis import configuration


class CheckpointError(RuntimeError):
  """A workdir or checkpoint that cannot be used; the message says what to do."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=True),
  )


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator,
         config: ml_collections.ConfigDict) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.PyGrainCheckpointSave(data_iterator),
      config=ocp.args.JsonSave(config.to_dict()),
  ))


def restore_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def check_compatible(saved_config: dict, config: ml_collections.ConfigDict,
                     workdir: str) -> None:
  diffs = configuration.structural_differences(saved_config, config)
  if diffs:
    raise CheckpointError(
        f"The checkpoint in {checkpoint_dir(workdir)} was made with an incompatible config "
        f"({'; '.join(diffs)}). Use a new --workdir, or the checkpoint's values; the "
        "checkpoint was not touched.")


def restore_train(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iterator):
  """Restores state (into the shardings of ``abstract_state``) and the iterator in place."""
  return mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.PyGrainCheckpointRestore(data_iterator),
  ))["state"]


def restore_state_unsharded(path: str):
  """A saved train state as a pytree of arrays on one device, whatever mesh saved it."""
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  return checkpointer.restore(path, target)


def abstract(tree, sharding=None):
  """ShapeDtypeStructs of a pytree (with ``sharding`` if given), for restoring into."""
  def one(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=sharding if sharding is not None else x.sharding)
  return jax.tree.map(one, tree)


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model restored from a workdir alone (for sampling and evaluation)."""
  config: ml_collections.ConfigDict
  models: Any  # train_state.Models
  params: dict  # {'gen': ..., 'critic': ..., 'cls': ...}
  step: int


def config_from_json(saved: dict) -> ml_collections.ConfigDict:
  """The saved JSON config as a ConfigDict, lists turned back into tuples."""
  def fix(v):
    if isinstance(v, dict):
      return {k: fix(x) for k, x in v.items()}
    return tuple(v) if isinstance(v, list) else v
  return ml_collections.ConfigDict(fix(saved))


def load_trained(workdir: str, step: int | None = None) -> Trained:
  """Restores the config and params of ``workdir``'s checkpoint (the latest unless ``step``)."""
  from attrdis import train_state  # pylint: disable=g-import-not-at-top
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f"No checkpoint in {workdir}: {directory} does not exist. Train "
                          f"first: python run_train.py --config=... --workdir={workdir}")
  mngr = manager(workdir, create=False)
  steps = mngr.all_steps()
  if not steps:
    raise CheckpointError(f"No checkpoint in {directory}. Train first: python run_train.py "
                          f"--config=... --workdir={workdir}")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise CheckpointError(f"No checkpoint for step {step} in {directory}; there are steps "
                          f"{', '.join(map(str, sorted(steps)))}.")
  config = config_from_json(restore_config(mngr, step))
  params = restore_state_unsharded(os.path.join(directory, str(step), "state"))["params"]
  heads = sorted(params["cls"], key=lambda k: int(k.rsplit("_", 1)[-1]))
  num_classes = [params["cls"][k]["head"]["kernel"].shape[-1] for k in heads]
  models = train_state.create_models(config, num_classes)
  expected = jax.eval_shape(lambda: train_state.init_params(models, jax.random.key(0)))
  if jax.tree.structure(expected) != jax.tree.structure(params) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params))):
    raise CheckpointError(f"The checkpoint in {directory} does not match the model its own "
                          "config describes; it was made by another version of attrdis.")
  return Trained(config=config, models=models, params=params, step=int(step))

"""Orbax checkpoints in ``workdir/checkpoints``: train state, grain iterator state, config.

Each step's checkpoint holds three items: ``state`` (params and the three optimizer
states, restored into the same pytree), ``data`` (the grain iterator's position) and
``config`` (JSON, so that sampling and evaluation can rebuild the model from the
workdir alone, and a restart can refuse an incompatible config).
"""

from __future__ import annotations

import os

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


def abstract(tree, sharding=None):
  """ShapeDtypeStructs of a pytree (with ``sharding`` if given), for restoring into."""
  def one(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=sharding if sharding is not None else x.sharding)
  return jax.tree.map(one, tree)

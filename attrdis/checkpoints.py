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


class CheckpointWriteError(CheckpointError):
  """Writing a checkpoint failed (disk full, permissions); the previous ones are intact."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 3, create: bool = True,
            cleanup_tmp: bool = False) -> ocp.CheckpointManager:
  """Orbax writes each checkpoint into ``<step>.orbax-checkpoint-tmp-*`` and renames it to
  ``<step>`` when complete (atomic on local and POSIX network file systems), so a process
  killed mid-write leaves only a temporary folder, which readers ignore. ``cleanup_tmp``
  (training only: a reader must not delete a running training's write) removes such
  leftovers when the manager is created."""
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=True,
                                           cleanup_tmp_directories=cleanup_tmp),
  )


def complete_steps(workdir: str) -> list[int]:
  """The steps whose checkpoint folder is complete (renamed from its temporary name)."""
  try:
    names = os.listdir(checkpoint_dir(workdir))
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


def _reason(e: BaseException) -> str:
  """A short description of a write failure (tensorstore's messages are long)."""
  from attrdis import errors  # pylint: disable=g-import-not-at-top
  if isinstance(e, OSError) and e.strerror:
    return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
  text = errors.one_line(str(e)) or type(e).__name__
  for known in ("No space left on device", "File too large", "Disk quota exceeded",
                "Permission denied", "Read-only file system"):
    if known in text:
      return known
  return text[:300]


def write_error(workdir: str, step: int | None, e: BaseException) -> CheckpointWriteError:
  done = [s for s in complete_steps(workdir) if step is None or s < step]
  kept = (f"the last complete checkpoint (step {done[-1]}) is intact; start the same command "
          "again to resume from it") if done else "no earlier checkpoint exists"
  what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
  return CheckpointWriteError(
      f"Could not write {what} in {checkpoint_dir(workdir)} ({_reason(e)}); {kept} once the "
      "disk has space and the folder is writable.")


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator,
         config: ml_collections.ConfigDict) -> None:
  """Starts an asynchronous save of ``step``. A failure of the previous asynchronous save
  surfaces here (or in :func:`wait`) as a :class:`CheckpointWriteError`."""
  workdir = os.path.dirname(str(mngr.directory))
  try:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.PyGrainCheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config.to_dict()),
    ))
  except Exception as e:  # pylint: disable=broad-except
    failed = getattr(mngr, "_attrdis_in_flight", step)
    raise write_error(workdir, failed, e) from e
  mngr._attrdis_in_flight = step  # pylint: disable=protected-access


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous save in flight; raises CheckpointWriteError if it failed."""
  workdir = os.path.dirname(str(mngr.directory))
  try:
    mngr.wait_until_finished()
    mngr.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except
    raise write_error(workdir, getattr(mngr, "_attrdis_in_flight", None), e) from e


def not_attrdis(directory: str, step: int, e: BaseException) -> CheckpointError:
  from attrdis import errors  # pylint: disable=g-import-not-at-top
  return CheckpointError(
      f"{os.path.join(directory, str(step))} is not a readable attrdis checkpoint "
      f"({errors.one_line(str(e))[:200] or type(e).__name__}); it may come from another "
      "program or be damaged. Use another --workdir, or remove that folder to fall back to "
      "an earlier step.")


def restore_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  try:
    config = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    config = config["config"]
  except Exception as e:  # pylint: disable=broad-except
    raise not_attrdis(str(mngr.directory), step, e) from e
  if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
    raise not_attrdis(str(mngr.directory), step, ValueError("its config item is not an "
                                                            "attrdis config"))
  return config


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
  try:
    return mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.PyGrainCheckpointRestore(data_iterator),
    ))["state"]
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    directory = os.path.join(str(mngr.directory), str(step))
    if "process_" in str(e) and isinstance(e, (FileNotFoundError, ValueError)):
      raise CheckpointError(
          f"{directory} holds the data position of a run with another number of processes "
          f"(this run has {jax.process_count()}); resume with the process count that made it, "
          "or use a new --workdir.") from e
    raise not_attrdis(str(mngr.directory), step, e) from e


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

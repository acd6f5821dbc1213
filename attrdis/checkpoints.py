"""Orbax checkpoints in ``workdir/checkpoints``: train state, grain iterator state, config.

Each step's checkpoint holds three items: ``state`` (params and the three optimizer
states, restored into the same pytree), ``data`` (the grain iterator's position) and
``config`` (JSON, so that sampling and evaluation can rebuild the model from the
workdir alone, and a restart can refuse an incompatible config).

Integrity: Orbax and TensorStore do not notice every damaged file (a missing or truncated
file of the array data can restore without an error, and a garbled one restores other
numbers). So each checkpoint also lists its files with their sizes and CRC-32 checksums in
``<step>/checksums.json``, written into the checkpoint's temporary folder just before Orbax
renames it (so the list is part of the atomic checkpoint). :func:`damage` compares the files
with the list and parses the JSON items; training, sampling and evaluation run it before they
restore a checkpoint.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import sys
import zlib
from typing import Any

import grain.python as grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from attrdis import configuration
from attrdis import errors


class CheckpointError(errors.UserError, RuntimeError):
  """A workdir or checkpoint that cannot be used; the message says what to do."""


class CheckpointWriteError(CheckpointError):
  """Writing a checkpoint failed (disk full, permissions); the previous ones are intact."""


ITEMS = ("state", "data", "config")
FILE_LIST = "checksums.json"
_LISTED = "attrdis_file_list"  # custom metadata of the checkpoints that have the list
DAMAGED_DIR = "damaged_checkpoints"  # in the workdir: damaged checkpoints moved aside


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def damaged_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), DAMAGED_DIR)


class _FileLister:
  """Orbax's post-finalization callback: lists the files of the checkpoint being written (in
  its temporary folder, before the rename) in ``checksums.json``. Runs after every process
  has written its files; process 0 writes the list. ``step`` is set by :func:`save`."""

  def __init__(self, directory: str):
    self.directory = directory
    self.step: int | None = None

  def __call__(self) -> None:
    if self.step is None or jax.process_index() != 0:
      return
    tmp = glob.glob(os.path.join(glob.escape(self.directory), f"{self.step}.orbax-checkpoint-tmp*"))
    # One temporary folder per write (older leftovers are removed when training starts); a
    # file system where Orbax writes in place has the final folder only.
    folder = max(tmp, key=os.path.getmtime) if tmp else os.path.join(self.directory, str(self.step))
    write_file_list(folder)


def _quiet_failed_writes() -> None:
  """Keeps a failed checkpoint write to the one error line of its :class:`CheckpointWriteError`.

  Written against orbax-checkpoint 0.12.8 and tensorstore 0.1.86 (Python 3.11), where two
  things that no option of those libraries turns off print around that line:

  * Orbax's background threads log the failure at ERROR level with its traceback
    (``logging.exception`` in its ``_SignalingThread``). Orbax logs through absl's single
    "absl" logger, so no logger level can quiet Orbax alone: a filter on that logger drops the
    traceback of the records that come from Orbax's package; their message line stays.
  * Orbax runs a save's writes under ``asyncio.gather`` in an event loop of its own, and closes
    that loop as soon as the first write fails. TensorStore then completes the writes still in
    flight and calls ``loop.call_soon_threadsafe`` on the closed loop from its own threads;
    Python reports each as an unraisable "RuntimeError: Event loop is closed" with a traceback
    (dozens, some after the error line). Waiting for the save or closing the manager does not
    prevent them (the loop is closed inside Orbax's thread before either returns), so a
    ``sys.unraisablehook`` drops exactly those and passes everything else on.

  Installed once per process, by the first manager that writes. Remove when Orbax cancels the
  other writes of a failed save, or keeps its loop until they finish.
  """
  global _quieted
  if _quieted:
    return
  _quieted = True
  orbax_dir = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__))) + os.sep

  def drop_orbax_tracebacks(record: logging.LogRecord) -> bool:
    if record.exc_info and os.path.abspath(record.pathname or "").startswith(orbax_dir):
      record.exc_info, record.exc_text = None, None
    return True

  logging.getLogger("absl").addFilter(drop_orbax_tracebacks)
  previous = sys.unraisablehook

  def unraisablehook(unraisable) -> None:
    tb = unraisable.exc_traceback
    if not (
      unraisable.exc_type is RuntimeError
      and tb is not None
      and str(unraisable.exc_value) == "Event loop is closed"
      and tb.tb_frame.f_code.co_name == "call_soon_threadsafe"
    ):
      previous(unraisable)

  sys.unraisablehook = unraisablehook


_quieted = False


def manager(
  workdir: str, keep: int = 3, create: bool = True, cleanup_tmp: bool = False
) -> ocp.CheckpointManager:
  """Orbax writes each checkpoint into ``<step>.orbax-checkpoint-tmp-*`` and renames it to
  ``<step>`` when complete (atomic on local and POSIX network file systems), so a process
  killed mid-write leaves only a temporary folder, which readers ignore. ``cleanup_tmp``
  (training only: a reader must not delete a running training's write) removes such
  leftovers when the manager is created. A manager that writes (``create``) lists each
  checkpoint's files in ``checksums.json``."""
  lister = _FileLister(checkpoint_dir(workdir)) if create else None
  if create:
    _quiet_failed_writes()
  mngr = ocp.CheckpointManager(
    checkpoint_dir(workdir),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=create,
      enable_async_checkpointing=True,
      cleanup_tmp_directories=cleanup_tmp,
      async_options=ocp.AsyncOptions(post_finalization_callback=lister)
      if lister is not None
      else None,
    ),
  )
  mngr._attrdis_lister = lister  # pylint: disable=protected-access
  return mngr


# ----------------------------------------------------------------------------------------
# Integrity: the file list, and what is wrong with a checkpoint.


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(folder: str) -> list[str]:
  """The files of the checkpoint's items (state, data, config), relative to ``folder``.
  (Orbax updates its own bookkeeping at the top, ``_CHECKPOINT_METADATA`` and
  ``commit_success.txt``, after the rename: those are not listed.)"""
  out = []
  for item in ITEMS:
    for root, _, names in os.walk(os.path.join(folder, item)):
      out.extend(os.path.relpath(os.path.join(root, name), folder) for name in names)
  return sorted(out)


def write_file_list(folder: str) -> None:
  """Writes ``folder/checksums.json``: {"files": {relative path: [bytes, crc32]}} of every
  file of the checkpoint's items (atomically: a temporary file renamed)."""
  files = {
    rel: [os.path.getsize(os.path.join(folder, rel)), _crc32(os.path.join(folder, rel))]
    for rel in _files(folder)
  }
  tmp = os.path.join(folder, FILE_LIST + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"format": 1, "files": files}, f, indent=0)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(folder, FILE_LIST))


def _json_problem(path: str) -> str | None:
  try:
    with open(path, "rb") as f:
      json.loads(f.read().decode("utf-8"))
  except FileNotFoundError:
    return "missing"
  except OSError as e:
    return e.strerror or type(e).__name__
  except ValueError:
    return "not valid JSON"
  return None


def _json_value(path: str):
  with open(path, "rb") as f:
    return json.loads(f.read().decode("utf-8"))


def damage(folder: str) -> str | None:
  """What is wrong with the checkpoint in ``folder`` (``W/checkpoints/<step>``), in a few
  words naming the file, e.g. ``state/_sharding: truncated (100 of 68313 bytes)``; None if
  it is intact.

  Reads every file once: sizes and CRC-32 checksums against ``checksums.json``, and the JSON
  files (config, data positions, the state's metadata) must parse. Checkpoints written before
  the file list existed get the JSON checks only."""
  for item in ITEMS:
    if not os.path.isdir(os.path.join(folder, item)):
      return f"{item}/: missing"
  listed = os.path.join(folder, FILE_LIST)
  if os.path.exists(listed):
    try:
      with open(listed, "rb") as f:
        files = json.loads(f.read().decode("utf-8"))["files"]
      files = {str(k): (int(v[0]), int(v[1])) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
      return f"{FILE_LIST}: unreadable (the list of the checkpoint's files)"
    for rel, (size, crc) in sorted(files.items()):
      path = os.path.join(folder, rel)
      try:
        got = os.path.getsize(path)
      except FileNotFoundError:
        return f"{rel}: missing"
      except OSError as e:
        return f"{rel}: {e.strerror or type(e).__name__}"
      if got < size:
        return f"{rel}: truncated ({got} of {size} bytes)"
      if got > size:
        return f"{rel}: {got} bytes where {size} were written"
      try:
        if _crc32(path) != crc:
          return f"{rel}: contents changed since it was written (CRC-32 mismatch)"
      except OSError as e:
        return f"{rel}: {e.strerror or type(e).__name__}"
  step_metadata = os.path.join(folder, "_CHECKPOINT_METADATA")
  if os.path.exists(step_metadata):
    problem = _json_problem(step_metadata)
    if problem:
      return f"_CHECKPOINT_METADATA: {problem}"
    custom = _json_value(step_metadata)
    custom = custom.get("custom_metadata") if isinstance(custom, dict) else None
    if not os.path.exists(listed) and isinstance(custom, dict) and custom.get(_LISTED):
      return f"{FILE_LIST}: missing (the list of the checkpoint's files)"
  problem = _json_problem(os.path.join(folder, "config", "metadata"))
  if problem:
    return f"config/metadata: {problem}"
  positions = sorted(glob.glob(os.path.join(glob.escape(folder), "data", "process_*-of-*.json")))
  if not positions:
    return "data/: no data position (process_*-of-*.json)"
  for path in positions:
    problem = _json_problem(path)
    if problem:
      return f"data/{os.path.basename(path)}: {problem}"
  for name in ("_METADATA", "_sharding"):
    path = os.path.join(folder, "state", name)
    if name == "_METADATA" or os.path.exists(path):
      problem = _json_problem(path)
      if problem:
        return f"state/{name}: {problem}"
  return None


@dataclasses.dataclass(frozen=True)
class Damaged:
  """Checkpoints newer than the newest intact one (newest first), and that one."""

  damaged: tuple[tuple[int, str], ...]  # (step, what is wrong)
  intact: int | None

  def describe(self, directory: str) -> str:
    (step, why), rest = self.damaged[0], self.damaged[1:]
    folder = os.path.join(directory, str(step))
    if os.path.exists(os.path.join(folder, FILE_LIST)):
      text = f"Checkpoint {folder} is damaged ({why})"
    else:  # no file list: written by an older version, or not by attrdis at all
      text = (
        f"{folder} is not a readable attrdis checkpoint ({why}; it is damaged or comes "
        "from another program)"
      )
    if rest:
      text += (
        f"; so {'is' if len(rest) == 1 else 'are'} the checkpoint"
        f"{'' if len(rest) == 1 else 's'} of step {', '.join(str(s) for s, _ in rest)}"
      )
    if self.intact is None:
      return text + f"; no intact checkpoint is left in {directory}"
    return text + f"; the newest intact checkpoint is step {self.intact}"


def check_latest(workdir: str, step: int | None = None) -> tuple[int | None, Damaged | None]:
  """(the checkpoint to use, None) when ``step`` (default: the latest) is intact, else
  (None, what is damaged and the newest intact step). (None, None) with no checkpoint."""
  steps = complete_steps(workdir)
  if not steps:
    return None, None
  directory = checkpoint_dir(workdir)
  wanted = steps[-1] if step is None else step
  why = damage(os.path.join(directory, str(wanted)))
  if why is None:
    return wanted, None
  damaged, intact = [(wanted, why)], None
  for s in reversed(steps):
    if s == wanted:
      continue
    why = damage(os.path.join(directory, str(s)))
    if why is None:
      intact = s
      break
    if step is None:  # newer than the newest intact one
      damaged.append((s, why))
  return None, Damaged(tuple(damaged), intact)


def move_aside(workdir: str, steps) -> list[str]:
  """Moves the checkpoints of ``steps`` to ``W/damaged_checkpoints/<step>`` (never deletes;
  ``<step>-2``, ``-3``, ... if that exists); returns the new paths."""
  os.makedirs(damaged_dir(workdir), exist_ok=True)
  moved = []
  for step in steps:
    target, n = os.path.join(damaged_dir(workdir), str(step)), 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(damaged_dir(workdir), f"{step}-{n}")
    os.replace(os.path.join(checkpoint_dir(workdir), str(step)), target)
    moved.append(target)
  return moved


def resume_step(workdir: str, resume_from_intact: bool) -> int | None:
  """The checkpoint training resumes from: the latest, if intact. Otherwise a
  :class:`CheckpointError` naming the damaged one and the newest intact one; or, with
  ``resume_from_intact``, the damaged ones newer than it are moved to
  ``W/damaged_checkpoints/`` and the newest intact step is returned. None: start anew."""
  step, damaged = check_latest(workdir)
  if damaged is None:
    return step
  directory = checkpoint_dir(workdir)
  what = damaged.describe(directory)
  if damaged.intact is None:
    raise CheckpointError(
      f"{what}. Nothing was changed; to start anew, move {directory} aside or use another "
      "--workdir."
    )
  if not resume_from_intact:
    raise CheckpointError(
      f"{what}. Nothing was changed; start again with --config.resume_from_intact=True to "
      f"move the damaged checkpoint{'s' if len(damaged.damaged) > 1 else ''} to "
      f"{damaged_dir(workdir)} and resume from step {damaged.intact}."
    )
  moved = move_aside(workdir, [s for s, _ in damaged.damaged])
  print(f"{what}: moved to {', '.join(moved)}; resuming from step {damaged.intact}.", flush=True)
  return damaged.intact


def complete_steps(workdir: str) -> list[int]:
  """The steps whose checkpoint folder is complete (renamed from its temporary name)."""
  try:
    names = os.listdir(checkpoint_dir(workdir))
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


def _reason(e: BaseException) -> str:
  """A short description of a write failure (tensorstore's messages are long)."""
  if isinstance(e, OSError) and e.strerror:
    return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
  text = errors.one_line(str(e)) or type(e).__name__
  for known in (
    "No space left on device",
    "File too large",
    "Disk quota exceeded",
    "Permission denied",
    "Read-only file system",
  ):
    if known in text:
      return known
  return text[:300]


def write_error(workdir: str, step: int | None, e: BaseException) -> CheckpointWriteError:
  done = [s for s in complete_steps(workdir) if step is None or s < step]
  kept = (
    (
      f"the last complete checkpoint (step {done[-1]}) is intact; start the same command "
      "again to resume from it"
    )
    if done
    else "no earlier checkpoint exists"
  )
  what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
  return CheckpointWriteError(
    f"Could not write {what} in {checkpoint_dir(workdir)} ({_reason(e)}); {kept} once the "
    "disk has space and the folder is writable."
  )


def save(
  mngr: ocp.CheckpointManager, step: int, state, data_iterator, config: ml_collections.ConfigDict
) -> None:
  """Starts an asynchronous save of ``step``. A failure of the previous asynchronous save
  surfaces here (or in :func:`wait`) as a :class:`CheckpointWriteError`."""
  workdir = os.path.dirname(str(mngr.directory))
  # Orbax's save waits for the previous one first anyway; waiting here too means the file
  # lister of that save has run before it is told the next step.
  wait(mngr)
  lister = getattr(mngr, "_attrdis_lister", None)
  if lister is not None:
    lister.step = step
  try:
    mngr.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.PyGrainCheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config.to_dict()),
      ),
      custom_metadata={_LISTED: True} if lister is not None else None,
    )
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
  return CheckpointError(
    f"{os.path.join(directory, str(step))} is not a readable attrdis checkpoint "
    f"({errors.one_line(str(e))[:200] or type(e).__name__}); it may come from another "
    "program or be damaged. Use another --workdir, or remove that folder to fall back to "
    "an earlier step."
  )


def restore_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  try:
    config = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    config = config["config"]
  except Exception as e:  # pylint: disable=broad-except
    raise not_attrdis(str(mngr.directory), step, e) from e
  if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
    raise not_attrdis(
      str(mngr.directory), step, ValueError("its config item is not an attrdis config")
    )
  return config


def check_compatible(saved_config: dict, config: ml_collections.ConfigDict, workdir: str) -> None:
  diffs = configuration.structural_differences(saved_config, config)
  if diffs:
    raise CheckpointError(
      f"The checkpoint in {checkpoint_dir(workdir)} was made with an incompatible config "
      f"({'; '.join(diffs)}). Use a new --workdir, or the checkpoint's values; the "
      "checkpoint was not touched."
    )


def restore_train(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iterator):
  """Restores state (into the shardings of ``abstract_state``) and the iterator in place."""
  try:
    return mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.PyGrainCheckpointRestore(data_iterator),
      ),
    )["state"]
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    directory = os.path.join(str(mngr.directory), str(step))
    if "process_" in str(e) and isinstance(e, (FileNotFoundError, ValueError)):
      raise CheckpointError(
        f"{directory} holds the data position of a run with another number of processes "
        f"(this run has {jax.process_count()}); resume with the process count that made it, "
        "or use a new --workdir."
      ) from e
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
    return jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sharding if sharding is not None else x.sharding
    )

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
    raise CheckpointError(
      f"No checkpoint in {workdir}: {directory} does not exist. Train "
      f"first: python run_train.py --config=... --workdir={workdir}"
    )
  mngr = manager(workdir, create=False)
  steps = mngr.all_steps()
  if not steps:
    raise CheckpointError(
      f"No checkpoint in {directory}. Train first: python run_train.py "
      f"--config=... --workdir={workdir}"
    )
  if step is not None and step not in steps:
    raise CheckpointError(
      f"No checkpoint for step {step} in {directory}; there are steps "
      f"{', '.join(map(str, sorted(steps)))}."
    )
  step, damaged = check_latest(workdir, step)
  if damaged is not None:
    advice = (
      f": use --step={damaged.intact}"
      if damaged.intact is not None
      else f" (train again: python run_train.py --config=... --workdir={workdir})"
    )
    raise CheckpointError(damaged.describe(directory) + advice + ".")
  config = config_from_json(restore_config(mngr, step))
  try:
    params = restore_state_unsharded(os.path.join(directory, str(step), "state"))["params"]
  except (ValueError, KeyError, TypeError, OSError) as e:
    raise not_attrdis(directory, step, e) from e
  heads = sorted(params["cls"], key=lambda k: int(k.rsplit("_", 1)[-1]))
  num_classes = [params["cls"][k]["head"]["kernel"].shape[-1] for k in heads]
  models = train_state.create_models(config, num_classes)
  expected = jax.eval_shape(lambda: train_state.init_params(models, jax.random.key(0)))
  if jax.tree.structure(expected) != jax.tree.structure(params) or any(
    a.shape != b.shape for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params))
  ):
    raise CheckpointError(
      f"The checkpoint in {directory} does not match the model its own "
      "config describes; it was made by another version of attrdis."
    )
  return Trained(config=config, models=models, params=params, step=int(step))

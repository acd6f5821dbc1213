"""The training loop: ``train_and_evaluate(config, workdir)``.

Everything random is a function of ``config.seed`` and the step; the data order is the
grain iterator's, whose position is checkpointed with the params, so a run stopped and
started again on the same workdir ends where an uninterrupted run would.

Reliability (docs/reliability.md): SIGTERM/SIGINT end the run after the current step with
a checkpoint at that step (all processes agree on the step through JAX's preemption sync
point); non-finite steps are flagged inside the step, never applied, and stop the run (or
are skipped, with ``config.skip_nonfinite_updates``) without a checkpoint after them;
checkpoint writes are atomic and their failures name the last intact checkpoint. Under
``jax.distributed`` every process runs this same loop on its rows of each global batch. One
trainer per workdir: process 0 holds ``W/train.lock`` for the run; a damaged latest checkpoint
stops the run before anything is restored (``config.resume_from_intact`` moves it aside and
resumes from the newest intact one); grain's workers and their shared memory are closed
whatever ends the run.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import gc
import os
import signal
import socket
import sys
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from attrdis import checkpoints
from attrdis import compilation_cache
from attrdis import configuration
from attrdis import errors
from attrdis import images
from attrdis import input_pipeline
from attrdis import metric_writers
from attrdis import sampling
from attrdis import train_state as ts
from attrdis import train_step as step_lib
from attrdis import workdir_lock
from attrdis.configuration import ConfigError


def check_workdir(workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{socket.gethostname()}_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(
      f"--workdir={workdir} is not writable ({e.strerror}); give a folder you can write to."
    ) from None
  return workdir


def first_batch(data_iter, num_workers: int):
  """``next(data_iter)``, grain's worker processes starting with SIGINT and SIGTERM ignored.

  Ctrl-C in a terminal sends SIGINT to the whole process group, and schedulers (SLURM's
  scancel, preemption) send SIGTERM to every process of a job: the workers too, where SIGINT
  prints a KeyboardInterrupt traceback each and SIGTERM kills them with batches in shared
  memory that nobody frees. The trainer handles both signals and then closes the workers
  itself, in order. A child starts with a signal ignored if its parent ignored it when it
  started it (and Python leaves it so). The workers start with the first batch, so that is
  fetched in a helper thread while this (main) thread ignores the signals just until they
  exist; then the trainer's handlers are back, for the rest of the wait too. (A handler not
  installed from Python, JAX's preemption notifier for SIGTERM, is left alone.)"""
  if num_workers <= 0 or threading.current_thread() is not threading.main_thread():
    return next(data_iter)
  import multiprocessing  # pylint: disable=g-import-not-at-top

  before = {p.pid for p in multiprocessing.active_children()}
  result = {}

  def fetch():
    try:
      result["batch"] = next(data_iter)
    except BaseException as e:  # pylint: disable=broad-except
      result["error"] = e

  helper = threading.Thread(target=fetch, name="attrdis-first-batch", daemon=True)
  previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
  previous = {sig: h for sig, h in previous.items() if h is not None}
  try:
    for sig in previous:
      signal.signal(sig, signal.SIG_IGN)
    helper.start()
    while (
      helper.is_alive()
      and len({p.pid for p in multiprocessing.active_children()} - before) < num_workers
    ):
      time.sleep(0.005)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  while helper.is_alive():
    helper.join(0.1)
  if "error" in result:
    raise result["error"]
  return result["batch"]


def to_host_memory(batch: dict) -> dict:
  """A batch copied out of the shared memory grain's worker processes fill, so that the
  shared memory is released as soon as the batch is taken (not when an array that may alias
  it is collected, which can be after the last moment Python cleans up at exit)."""
  return {k: np.array(v) for k, v in batch.items()}


def close_iterator(data_iter) -> None:
  """Stops a grain iterator's worker processes and frees the shared memory of the batches
  they had prepared (else Python warns of leaked shared memory at exit). grain 0.2's
  ``DataLoaderIterator`` has no ``close`` of its own; the dataset iterator it wraps has."""
  inner = getattr(data_iter, "_iterator", data_iter)
  close = getattr(inner, "close", None)
  if close is not None:
    close()
  # grain frees the blocks of the batches the trainer dropped in a one-thread pool of daemon
  # threads, which an exit right after the last batch would not wait for: wait for it here
  # (its tasks run in order), for a few seconds at most.
  try:
    from grain._src.python.ipc import shared_memory_array  # pylint: disable=g-import-not-at-top
  except ImportError:  # a grain without it (the pinned one has it)
    return
  pool = getattr(shared_memory_array.SharedMemoryArray, "_del_thread_pool", None)
  if pool is not None:
    pool.apply_async(int).wait(timeout=5)


def check_devices(config: ml_collections.ConfigDict) -> None:
  n = jax.device_count()
  if config.batch_size % n:
    raise ConfigError(
      f"config.batch_size={config.batch_size} does not divide over the "
      f"{n} devices; use a multiple of {n}."
    )


def num_steps(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  steps_per_epoch = info.num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(
      f"config.batch_size={config.batch_size} is larger than the "
      f"{info.num_train} training images of {info.name}."
    )
  return config.num_epochs * steps_per_epoch


def sample_images(config, builder, info) -> np.ndarray:
  """The first ``num_sample_images`` test images (train if there is no test split)."""
  split = "test" if info.num_test else "train"
  source = builder.as_data_source(split)
  n = min(config.num_sample_images, len(source))
  to_inputs = input_pipeline.ToModelInputs(config.dataset.attributes, config.image_size)
  return np.stack([to_inputs.map(source[i])["image"] for i in range(n)])


def fetch(tree):
  """Device values as numpy on this host, for arrays that span other processes too: a
  replicated array is read from a local copy; a sharded one is gathered (a collective: all
  processes must call this together, as the loop does)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.sharding.is_fully_replicated:
        return x.addressable_data(0)
      return multihost_utils.process_allgather(x, tiled=True)
    return x

  return jax.device_get(jax.tree.map(local, tree))


def data_rows(sharding: jax.sharding.Sharding, batch_size: int) -> tuple[int, int]:
  """The rows [start, stop) of the global batch that this process' devices hold."""
  index_map = sharding.addressable_devices_indices_map((batch_size,))
  spans = sorted(
    {
      (sl[0].start or 0, batch_size if sl[0].stop is None else sl[0].stop)
      for sl in index_map.values()
    }
  )
  start, stop = spans[0][0], spans[-1][1]
  if sum(b - a for a, b in spans) != stop - start:
    raise ConfigError(
      f"This process' devices hold rows {spans} of the global batch, not one "
      "contiguous block; the data pipeline needs a mesh whose devices are "
      "grouped by process."
    )
  return start, stop


def to_global(tree, sharding):
  """Host values (the same on every process) as global arrays with ``sharding``; each
  process fills its own devices, with no cross-process communication."""

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree)


def compile_train_step(models, config, mesh, schedule, state, num_classes, num_train_steps):
  """The jitted train step, compiled before the first step (its traced program and its
  compiled form read from the compilation cache when an earlier run made them). With several
  processes, all wait for each other here: a compile can take minutes and differ between
  processes, and CPU collectives (gloo) give up on a peer after 30 s at their first use."""
  _, data_sharding = step_lib.shardings(mesh)
  s, b = config.image_size, config.batch_size
  batch = {
    "image": jax.ShapeDtypeStruct(
      (b, s, s, 3), input_pipeline.train_image_dtype(config), sharding=data_sharding
    ),
    "label": jax.ShapeDtypeStruct((b, len(num_classes)), np.int32, sharding=data_sharding),
  }
  jitted = step_lib.jit_train_step(models, config, mesh, schedule)
  # Everything the step reads besides its arguments: the config (but the fields only the
  # loop reads), the classes per attribute and the length of the schedule.
  what = {
    "function": "train_step",
    "config": {
      name: repr(value)
      for name, value in configuration.flat_items(config)
      if not configuration.is_under(name, configuration.LOOP_FIELDS)
    },
    "num_classes": [int(n) for n in num_classes],
    "num_train_steps": int(num_train_steps),
  }
  t0 = time.perf_counter()
  compiled, traced = compilation_cache.compile_traced(jitted, (state, batch), what, (0,))
  logging.info(
    "Train step lowered and compiled in %.1f s (persistent compilation cache: %s; "
    "traced program: %s).",
    time.perf_counter() - t0,
    jax.config.jax_compilation_cache_dir or "off",
    traced,
  )
  if jax.process_count() > 1:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    ocp.multihost.sync_global_processes(
      "attrdis_train_step_compiled", timeout=3600, processes=set(range(jax.process_count()))
    )
  return compiled


class Preemption:
  """Turns SIGTERM and SIGINT into "stop after this step, with a checkpoint".

  One process: Python handlers set a flag that the loop reads after each step. Several
  processes: JAX's preemption notifier (installed by ``jax.distributed.initialize``) catches
  SIGTERM on any process and the processes agree on a step through
  ``multihost_utils.reached_preemption_sync_point``; SIGINT is forwarded to it as SIGTERM.
  A second SIGINT aborts at once (KeyboardInterrupt) without saving, except while the loop
  takes a batch from grain's worker processes (:meth:`fetching`): then it aborts as soon as
  the batch is copied out of shared memory, and a third SIGINT at once.

  Python runs a signal handler between two bytecodes of the main thread, which may be inside
  a garbage-collector callback (JAX registers one); an exception raised there is printed as
  "Exception ignored" and dropped. So the abort is raised only outside such callbacks, and
  otherwise re-delivered a moment later.
  """

  ABORTED = "nothing saved after the last checkpoint"  # the abort's message

  def __init__(self):
    self.signal_name = None
    self._previous = {}
    self._fetching = False
    self._abort_pending = False
    self._distributed = jax.process_count() > 1
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Not in the main thread: SIGTERM/SIGINT will not save a checkpoint.")
      return
    handlers = (
      {signal.SIGINT: self._forward}
      if self._distributed
      else {signal.SIGTERM: self._on_signal, signal.SIGINT: self._on_signal}
    )
    for sig, handler in handlers.items():
      self._previous[sig] = signal.signal(sig, handler)

  @contextlib.contextmanager
  def fetching(self):
    """Wraps taking a batch from the data iterator and copying it to host memory.

    With worker processes a batch arrives as blocks of shared memory that only the main
    process frees, once the batch is dropped. An abort raised halfway through grain's
    ``next`` (the block's name taken from the queue, not yet opened) or while a batch is
    still referenced leaves blocks that nobody frees before exit, and Python's resource
    tracker warns of them. So an abort that arrives here waits for the end of the block."""
    self._fetching = True
    try:
      yield
    finally:
      self._fetching = False
    if self._abort_pending:
      raise KeyboardInterrupt(self.ABORTED)

  def _abort(self, frame) -> None:
    """KeyboardInterrupt now, after the batch being fetched (the first time), or once the
    main thread has left a gc callback."""
    if self._fetching and not self._abort_pending:
      self._abort_pending = True
      return
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
      if frame.f_code in callbacks:
        threading.Timer(0.01, _thread.interrupt_main, args=(signal.SIGINT,)).start()
        return
      frame = frame.f_back
    raise KeyboardInterrupt(self.ABORTED)

  def _on_signal(self, signum, frame):
    if self.signal_name is not None and signum == signal.SIGINT:
      self._abort(frame)
      return
    self.signal_name = signal.Signals(signum).name
    sys.stderr.write(
      f"{self.signal_name} received: saving a checkpoint after the current "
      "step (Ctrl-C again aborts without saving).\n"
    )

  def _forward(self, signum, frame):
    del signum
    if self.signal_name is not None:
      self._abort(frame)
      return
    self.signal_name = "SIGINT"
    sys.stderr.write(
      "SIGINT received: all processes will save a checkpoint at a common step "
      "(Ctrl-C again aborts without saving).\n"
    )
    os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

  def reached(self, step: int) -> bool:
    """Whether to stop after ``step`` (call it after every step, on every process)."""
    if self._distributed:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      try:
        reached = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError as e:  # jax_enable_preemption_service=False
        logging.log_first_n(logging.WARNING, "No preemption sync: %s", 1, e)
        reached = False
      if reached:
        self.signal_name = self.signal_name or "SIGTERM"
      return reached
    return self.signal_name is not None

  def close(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def log_parameter_counts(params: dict, overview: bool = True) -> None:
  """Logs the parameter count of each group; with ``overview``, also each group's table of
  shapes, means and standard deviations (which needs values, not only shapes)."""
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top

  if overview:
    for group in ts.GROUPS:
      parameter_overview.log_parameter_overview(params[group], msg=f"Parameters: {group}")
  counts = {g: parameter_overview.count_parameters(params[g]) for g in ts.GROUPS}
  logging.info("Parameter counts: %s (total %d)", counts, sum(counts.values()))


def eta(steps_left: int, steps_per_sec: float) -> str:
  """``", 1 h 02 min left"`` (``""`` when nothing is left or the rate is unknown)."""
  if steps_left <= 0 or not steps_per_sec > 0:
    return ""
  minutes = round(steps_left / steps_per_sec / 60)
  if minutes < 1:
    return ", <1 min left"
  hours, minutes = divmod(minutes, 60)
  return f", {hours} h {minutes:02d} min left" if hours else f", {minutes} min left"


FLAGS = ("nonfinite", "nonfinite_state")  # per-step flags among the metrics (1.0 = set)


def state_flag_fn(replicated):
  """A jitted state → 1.0 if any param or optimizer state is NaN/inf, else 0.0 (on device;
  run after every step, it is read with the metrics)."""

  def flag(state):
    leaves = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves((state.params, state.opt_state))
      if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return 1.0 - jnp.all(jnp.stack(leaves)).astype(jnp.float32)

  return jax.jit(flag, out_shardings=replicated)


def fetch_pending(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
  return list(zip([s for s, _ in pending], fetch([m for _, m in pending])))


def summarize(host: list[tuple[int, dict]], skip_nonfinite: bool) -> dict:
  """Mean metrics of fetched steps; non-finite (skipped) steps are counted, not averaged."""
  good = [m for _, m in host if not any(m.get(f, 0.0) for f in FLAGS)]
  keys = [k for k in host[0][1] if k not in FLAGS]
  scalars = {k: float(np.mean([m[k] for m in good])) if good else float("nan") for k in keys}
  if skip_nonfinite:
    scalars["nonfinite_updates"] = float(len(host) - len(good))
  return scalars


def nonfinite_error(
  host: list[tuple[int, dict]], workdir: str, last_saved: int | None, skip_nonfinite: bool
) -> errors.NonFiniteError | None:
  """The error to stop with if a fetched step was non-finite (None if training goes on).

  A non-finite loss term stops the run unless ``skip_nonfinite`` (the step was not applied);
  a non-finite state (finite losses, NaN/inf update) always does: it cannot be skipped."""
  bad = [
    (s, m)
    for s, m in host
    if m.get("nonfinite_state", 0.0) or (m.get("nonfinite", 0.0) and not skip_nonfinite)
  ]
  if not bad:
    return None
  step, m = bad[0]
  terms = tuple(k for k, v in m.items() if k not in FLAGS and not np.isfinite(v))
  if terms:
    what = f"non-finite loss terms {', '.join(f'{k}={m[k]}' for k in terms)}"
  else:
    what = (
      "the update made the params or optimizer states non-finite (NaN/inf gradients) "
      "while every loss term was finite"
    )
  kept = (
    f"the last good checkpoint is step {last_saved} in "
    f"{checkpoints.checkpoint_dir(workdir)} (nothing later was saved)"
    if last_saved is not None
    else "no checkpoint had been saved yet"
  )
  hint = (
    "Lower config.optimizer.learning_rate or check the data"
    if terms and not skip_nonfinite
    else "Lower config.optimizer.learning_rate"
  )
  if terms and not skip_nonfinite:
    hint += ", or set config.skip_nonfinite_updates=True to skip such steps"
  return errors.NonFiniteError(
    f"Step {step}: {what}. Training stopped; {kept}. {hint}.", step=step, terms=terms
  )


EVAL_SHOWN = ("recon/psnr", "entropy/off_diagonal_normalized", "hopkins/expression/mean")


def run_periodic_eval(config, workdir, models, state, step, writer) -> dict:
  """``config.eval_every_steps``: the evaluator's cheap subset on the test split
  (:func:`attrdis.evaluation.suite.periodic_eval`), logged as ``eval/<metric>`` scalars and
  one line."""
  from attrdis.evaluation import suite  # pylint: disable=g-import-not-at-top

  t = time.time()
  metrics = suite.periodic_eval(config, workdir, models, state.params, step)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
  if jax.process_index() == 0:
    gt = [k for k in metrics if k.startswith("gt/") and k.endswith("/l1")]
    shown = [k for k in EVAL_SHOWN if k in metrics] + gt
    print(
      f"eval {step}: "
      + " ".join(f"{k}={metrics[k]:.4f}" for k in shown)
      + f" ({len(metrics)} metrics, {time.time() - t:.1f} s)",
      flush=True,
    )
  return metrics


def poison(batch: dict) -> dict:
  """config.debug_nan_at_step: the batch with NaN images (a test of the non-finite path)."""
  return dict(batch, image=np.full_like(batch["image"], np.nan))


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None
) -> ts.TrainState:
  """Trains (or resumes) in ``workdir``; returns the final state.

  ``stop_at_step`` ends the run early at that step, with a checkpoint, as a preemption
  would; started again, the run continues to ``num_train_steps``. SIGTERM/SIGINT do the same
  at the current step. Raises ``errors.NonFiniteError`` on a non-finite step (unless
  ``config.skip_nonfinite_updates``), ``checkpoints.CheckpointWriteError`` if a checkpoint
  cannot be written, ``workdir_lock.WorkdirBusyError`` if another trainer holds the workdir,
  ``ConfigError``/``CheckpointError`` for unusable inputs (a damaged latest checkpoint
  included, unless ``config.resume_from_intact``), all before anything is compiled.
  """
  configuration.validate(config)
  check_devices(config)
  check_dataset(config)
  # Closed in reverse order whatever ends the run: the data workers, the signal handlers,
  # then the workdir lock.
  with contextlib.ExitStack() as cleanup:
    workdir, latest = claim_workdir(config, workdir, cleanup)
    mngr = checkpoints.manager(workdir, keep=config.keep_checkpoints, cleanup_tmp=True)
    if latest is not None:
      checkpoints.check_compatible(checkpoints.restore_config(mngr, latest), config, workdir)
    preemption = Preemption()
    cleanup.callback(preemption.close)
    writers = []
    try:
      return _train(config, workdir, stop_at_step, mngr, latest, preemption, writers, cleanup)
    except KeyboardInterrupt:
      raise
    except BaseException:
      # Let the checkpoint in flight (the last good one) complete before the error ends the
      # run, and the metrics written so far reach their files.
      try:
        checkpoints.wait(mngr)
      except checkpoints.CheckpointError as e:
        logging.error("%s", e)
      for writer in writers:
        try:
          writer.flush()
        except Exception:  # pylint: disable=broad-except
          pass
      raise


def check_dataset(config: ml_collections.ConfigDict) -> None:
  """The config against the dataset's description (no data is read or prepared): the
  attributes are labelled, and the dataset's images are at least ``config.image_size`` pixels
  (the pipeline scales them down with antialiasing; scaled up they would only be blurred)."""
  builder = input_pipeline.get_builder(config.dataset)
  input_pipeline.check_attributes(
    builder, tuple(config.dataset.attributes), config.dataset.manual_dir
  )
  features = builder.info.features
  if features is None or "image" not in features:
    return  # known once prepared (a labelled folder stores config.image_size)
  stored = features["image"].shape[0]
  if stored is not None and stored < config.image_size:
    sizes = {}
    for c in getattr(type(builder), "BUILDER_CONFIGS", None) or []:
      size = getattr(c, "image_size", None)
      if size is not None:
        sizes.setdefault(int(size), c.name)
    hint = (
      f", or --config.dataset.builder_config={sizes[config.image_size]}"
      if config.image_size in sizes
      else ""
    )
    raise ConfigError(
      f"config.image_size={config.image_size}: dataset {builder.name!r} (config "
      f"{builder.builder_config.name!r}) has {stored} px images, smaller than the model's; "
      f"use --config.image_size={stored} or less{hint}."
    )


def claim_workdir(config, workdir: str, cleanup: contextlib.ExitStack) -> tuple[str, int | None]:
  """Makes ``workdir`` this run's: process 0 takes its lock (held until ``cleanup`` closes)
  before anything is written, then finds the checkpoint to resume from (moving damaged ones
  aside with ``config.resume_from_intact``); every process learns the outcome from process 0
  and checks that it can write there. Returns (absolute workdir, step to resume from or
  None)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  failure, latest = None, None
  if jax.process_index() == 0:
    try:
      try:
        os.makedirs(workdir, exist_ok=True)
        cleanup.enter_context(workdir_lock.WorkdirLock(workdir))
      except workdir_lock.WorkdirBusyError:
        raise
      except OSError as e:
        raise ConfigError(
          f"--workdir={workdir} is not writable ({e.strerror}); give a folder you can write to."
        ) from None
      check_workdir(workdir)
      latest = checkpoints.resume_step(workdir, bool(config.get("resume_from_intact", False)))
    except Exception as e:  # pylint: disable=broad-except
      failure = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    ok, step = multihost_utils.broadcast_one_to_all(
      np.array([failure is None, -1 if latest is None else latest], np.int32)
    )
    if failure is None and not ok:
      raise errors.InputError(
        f"--workdir={workdir}: process 0 could not start there (its error "
        "line says why); this process stops too."
      )
    latest = None if step < 0 else int(step)
  if failure is not None:
    raise failure
  if jax.process_index() != 0:
    check_workdir(workdir)
  return workdir, latest


def _train(
  config, workdir, stop_at_step, mngr, latest, preemption, writers, cleanup
) -> ts.TrainState:
  """The loop of :func:`train_and_evaluate` (after its checks); ``writers`` receives the
  metric writer, for the caller to flush if the run fails; ``cleanup`` closes the data
  iterator when the run ends."""
  started = time.perf_counter()
  builder, info = input_pipeline.load(config)
  num_train_steps = num_steps(config, info)
  models = ts.create_models(config, info.num_classes, num_train_steps)
  schedule = ts.learning_rate_schedule(config, num_train_steps)
  mesh = step_lib.make_mesh()
  replicated, data_sharding = step_lib.shardings(mesh)

  if latest is None:
    host_state = ts.create_train_state(models, config.seed)
    if jax.process_index() == 0:
      log_parameter_counts(host_state.params)
    state = to_global(host_state, replicated)
    del host_state
  else:
    # The checkpoint supplies every value: the state is only described (shapes, dtypes,
    # shardings), so a resumed run does not compile and run the initialisation.
    state = checkpoints.abstract(
      jax.eval_shape(lambda: ts.create_train_state(models, config.seed)), replicated
    )
    if jax.process_index() == 0:
      log_parameter_counts(state.params, overview=False)

  rows = data_rows(data_sharding, config.batch_size)
  data_iter = iter(input_pipeline.create_loader(config, builder, "train", train=True, rows=rows))
  cleanup.callback(close_iterator, data_iter)
  if latest is not None:
    logging.info("Resuming from %s at step %d.", checkpoints.checkpoint_dir(workdir), latest)
    state = checkpoints.restore_train(mngr, latest, state, data_iter)
  initial_step = int(fetch(state.step))

  train_fn = compile_train_step(
    models, config, mesh, schedule, state, info.num_classes, num_train_steps
  )
  writer = metric_writers.create_writer(workdir, jax.process_index())
  writers.append(writer)
  if initial_step == 0:
    writer.write_hparams(
      {
        k: str(v) if isinstance(v, (tuple, list)) else v
        for k, v in configuration.flat_items(config)
      }
    )
  state_flag = state_flag_fn(replicated)
  grid_fn = jax.jit(functools.partial(sampling.monitoring_rows, models))
  monitor_x = to_global(sample_images(config, builder, info), replicated)
  logging.info(
    "Training %s on %s (%s) for %d steps from step %d on %d device(s), %d "
    "process(es); this process reads rows %s of each global batch.",
    ",".join(info.attributes),
    info.name,
    info.num_classes,
    num_train_steps,
    initial_step,
    jax.device_count(),
    jax.process_count(),
    rows,
  )
  skip = bool(config.get("skip_nonfinite_updates", False))
  workers = input_pipeline.default_num_workers(config.dataset.num_workers)
  pending, t_last, step_last = [], time.time(), initial_step
  last_saved = latest
  step = initial_step
  for step in range(initial_step + 1, num_train_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      with preemption.fetching():
        local = to_host_memory(
          first_batch(data_iter, workers) if step == initial_step + 1 else next(data_iter)
        )
      if step == config.get("debug_nan_at_step", 0):
        local = poison(local)
      batch = jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(data_sharding, a), local
      )
      state, metrics = train_fn(state, batch)
      pending.append((step, dict(metrics, nonfinite_state=state_flag(state))))
    if step == initial_step + 1:
      jax.block_until_ready(metrics)
      logging.info(
        "First step (%d) done %.1f s after the trainer started.",
        step,
        time.perf_counter() - started,
      )
    preempted = preemption.reached(step)
    last = step == num_train_steps or step == stop_at_step or preempted
    save_now = step % config.checkpoint_every_steps == 0 or last
    if step % config.log_every_steps == 0 or last:
      host = fetch_pending(pending)
      error = nonfinite_error(host, workdir, last_saved, skip)
      if error is not None:
        raise error
      scalars = summarize(host, skip)
      now = time.time()
      scalars["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
      pending, t_last, step_last = [], now, step
      writer.write_scalars(step, scalars)
      if jax.process_index() == 0:
        skipped = (
          f" skipped={int(scalars['nonfinite_updates'])}"
          if scalars.get("nonfinite_updates")
          else ""
        )
        per_attribute = " ".join(
          f"{a}={scalars[f'acc_trn/{a}']:.2f}" for a in info.attributes if f"acc_trn/{a}" in scalars
        )
        print(
          f"step {step}/{num_train_steps}: loss_g={scalars['loss_g']:.4f} "
          f"loss_d={scalars['loss_d']:.4f} loss_c={scalars['loss_c']:.4f} "
          f"rec={scalars['rec']:.4f} acc_trn={scalars['acc_trn']:.3f} "
          f"({per_attribute}){skipped} ({scalars['steps_per_sec']:.2f} steps/s"
          f"{eta(num_train_steps - step, scalars['steps_per_sec'])})",
          flush=True,
        )
    elif save_now:
      # Never save after a non-finite step: read the flags of the steps not yet fetched.
      flags = fetch([[m[f] for f in FLAGS] for _, m in pending])
      if np.any(flags):
        error = nonfinite_error(fetch_pending(pending), workdir, last_saved, skip)
        if error is not None:
          raise error
    if step % config.sample_every_steps == 0 or last:
      grid = images.make_grid(fetch(grid_fn(state.params["gen"], monitor_x)))
      if jax.process_index() == 0:
        images.save_png(grid, os.path.join(workdir, "samples", f"step_{step:07d}.png"))
        writer.write_images(step, {"samples": grid[None]})
    if (
      config.eval_every_steps > 0
      and not preempted
      and (step % config.eval_every_steps == 0 or step == num_train_steps)
    ):
      run_periodic_eval(config, workdir, models, state, step, writer)
    if save_now:
      checkpoints.save(mngr, step, state, data_iter, config)
      last_saved = step
    if last:
      break
  checkpoints.wait(mngr)
  writer.close()
  if preemption.signal_name is not None and step < num_train_steps:
    if jax.process_index() == 0:
      print(
        f"Preempted ({preemption.signal_name}) at step {step}: checkpoint saved in "
        f"{checkpoints.checkpoint_dir(workdir)}; run the same command again to resume.",
        flush=True,
      )
  return state

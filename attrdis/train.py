"""The training loop: ``train_and_evaluate(config, workdir)``.

Everything random is a function of ``config.seed`` and the step; the data order is the
grain iterator's, whose position is checkpointed with the params, so a run stopped and
started again on the same workdir ends where an uninterrupted run would.
"""

from __future__ import annotations

import functools
import os
import time

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import ml_collections
import numpy as np

from attrdis import checkpoints
from attrdis import configuration
from attrdis import images
from attrdis import input_pipeline
from attrdis import jsonl_writer
from attrdis import sampling
from attrdis import train_state as ts
from attrdis import train_step as step_lib
from attrdis.configuration import ConfigError


def check_workdir(workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} is not writable ({e.strerror}); give a folder "
                      "you can write to.") from None
  return workdir


def check_devices(config: ml_collections.ConfigDict) -> None:
  n = jax.device_count()
  if config.batch_size % n:
    raise ConfigError(f"config.batch_size={config.batch_size} does not divide over the "
                      f"{n} devices; use a multiple of {n}.")


def num_steps(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  steps_per_epoch = info.num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                      f"{info.num_train} training images of {info.name}.")
  return config.num_epochs * steps_per_epoch


def sample_images(config, builder, info) -> np.ndarray:
  """The first ``num_sample_images`` test images (train if there is no test split)."""
  split = "test" if info.num_test else "train"
  source = builder.as_data_source(split)
  n = min(config.num_sample_images, len(source))
  to_inputs = input_pipeline.ToModelInputs(config.dataset.attributes, config.image_size)
  return np.stack([to_inputs.map(source[i])["image"] for i in range(n)])


def log_parameter_counts(params: dict) -> None:
  for group in ts.GROUPS:
    parameter_overview.log_parameter_overview(params[group], msg=f"Parameters: {group}")
  counts = {g: parameter_overview.count_parameters(params[g]) for g in ts.GROUPS}
  logging.info("Parameter counts: %s (total %d)", counts, sum(counts.values()))


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + ``metrics.jsonl`` on process 0; logging only elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=True),
      jsonl_writer.JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
  ])


def mean_metrics(pending: list[dict]) -> dict:
  host = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at_step: int | None = None) -> ts.TrainState:
  """Trains (or resumes) in ``workdir``; returns the final state.

  ``stop_at_step`` ends the run early at that step, with a checkpoint, as a preemption
  would; started again, the run continues to ``num_train_steps``.
  """
  configuration.validate(config)
  check_devices(config)
  workdir = check_workdir(workdir)
  mngr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  latest = mngr.latest_step()
  if latest is not None:
    checkpoints.check_compatible(checkpoints.restore_config(mngr, latest), config, workdir)

  builder, info = input_pipeline.load(config)
  num_train_steps = num_steps(config, info)
  models = ts.create_models(config, info.num_classes, num_train_steps)
  schedule = ts.learning_rate_schedule(config, num_train_steps)
  mesh = step_lib.make_mesh()
  replicated, data_sharding = step_lib.shardings(mesh)

  state = jax.device_put(ts.create_train_state(models, config.seed), replicated)
  if jax.process_index() == 0:
    log_parameter_counts(state.params)

  data_iter = iter(input_pipeline.create_loader(config, builder, "train", train=True))
  if latest is not None:
    logging.info("Resuming from %s at step %d.", checkpoints.checkpoint_dir(workdir), latest)
    state = checkpoints.restore_train(mngr, latest, checkpoints.abstract(state), data_iter)
  initial_step = int(jax.device_get(state.step))

  writer = create_writer(workdir)
  if initial_step == 0:
    writer.write_hparams({k: str(v) if isinstance(v, (tuple, list)) else v
                          for k, v in configuration.flat_items(config)})
  train_fn = step_lib.jit_train_step(models, config, mesh, schedule)
  grid_fn = jax.jit(functools.partial(sampling.monitoring_rows, models))
  monitor_x = jax.device_put(sample_images(config, builder, info), replicated)
  report = periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                           every_steps=config.log_every_steps)

  logging.info("Training %s on %s (%s) for %d steps from step %d on %d device(s).",
               ",".join(info.attributes), info.name, info.num_classes, num_train_steps,
               initial_step, jax.device_count())
  pending, t_last, step_last = [], time.time(), initial_step
  for step in range(initial_step + 1, num_train_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = jax.tree.map(
          lambda a: jax.make_array_from_process_local_data(data_sharding, a), next(data_iter))
      state, metrics = train_fn(state, batch)
      pending.append(metrics)
    report(step)
    last = step == num_train_steps or step == stop_at_step
    if step % config.log_every_steps == 0 or last:
      scalars = mean_metrics(pending)
      now = time.time()
      scalars["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
      pending, t_last, step_last = [], now, step
      writer.write_scalars(step, scalars)
      if jax.process_index() == 0:
        print(f"step {step}/{num_train_steps}: loss_g={scalars['loss_g']:.4f} "
              f"loss_d={scalars['loss_d']:.4f} loss_c={scalars['loss_c']:.4f} "
              f"rec={scalars['rec']:.4f} acc_trn={scalars['acc_trn']:.3f} "
              f"({scalars['steps_per_sec']:.2f} steps/s)", flush=True)
    if step % config.sample_every_steps == 0 or last:
      grid = images.make_grid(jax.device_get(grid_fn(state.params["gen"], monitor_x)))
      if jax.process_index() == 0:
        images.save_png(grid, os.path.join(workdir, "samples", f"step_{step:07d}.png"))
        writer.write_images(step, {"samples": grid[None]})
    if step % config.checkpoint_every_steps == 0 or last:
      checkpoints.save(mngr, step, state, data_iter, config)
    if last:
      break
  mngr.wait_until_finished()
  writer.flush()
  return state

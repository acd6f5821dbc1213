"""Reliability: preemption, atomic checkpoints, non-finite losses, several
processes, full disks and hostile inputs, through run_train.py in subprocesses.

Compiles dominate, so every training subprocess shares one persistent XLA compilation
cache: only the reference run (1 process × 4 devices) and the first 2-process run compile
the train step; the others load it.
"""

import errno
import functools
import glob
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import grain.python as grain
from PIL import Image

from attrdis import checkpoints
from attrdis import cli
from attrdis import errors
from attrdis import input_pipeline
from attrdis import train_state as ts
from attrdis import train_step as step_lib
from attrdis import workdir_lock
from tiny import config_flags, tiny_config, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12


def base(data_dir):
  """The run every comparison uses: 12 steps (2.4 epochs of the 40 tiny training images),
  metrics every step, a checkpoint every 4."""
  c = tiny_config()
  c.dataset.data_dir = data_dir
  c.num_train_steps = STEPS
  c.log_every_steps = 1
  c.checkpoint_every_steps = 4
  c.sample_every_steps = STEPS
  c.keep_checkpoints = 5
  return c


class Runs:
  """Starts run_train.py subprocesses sharing one compilation cache. stdout (progress lines)
  is a pipe; stderr (absl's log) goes to a file, so that no pipe fills up and blocks."""

  def __init__(self, cache_dir, logs_dir):
    self.env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=str(cache_dir),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      TF_CPP_MIN_LOG_LEVEL="2",
    )
    self.logs = str(logs_dir)
    self.count = 0
    self.started = []

  def stop_all(self):
    for proc in self.started:
      if proc.poll() is None:
        proc.kill()
        proc.wait()

  def start(self, workdir, config=None, args=(), devices=4, stderr_pipe=False, **kw):
    """stderr_pipe: stderr through a pipe too (for a process whose files are size-capped)."""
    env = dict(self.env, XLA_FLAGS=xla_flags(devices))
    cmd = [
      sys.executable,
      os.path.join(ROOT, "run_train.py"),
      f"--config={os.path.join(ROOT, 'configs', 'synthetic.py')}",
      f"--workdir={workdir}",
    ] + (config_flags(config) if config is not None else [])
    self.count += 1
    err_path = os.path.join(self.logs, f"{self.count}.stderr")
    with open(err_path, "w") as err:
      proc = subprocess.Popen(
        cmd + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr_pipe else err,
        text=True,
        env=env,
        cwd=ROOT,
        **kw,
      )
    proc.err_path = err_path
    self.started.append(proc)
    return proc

  @staticmethod
  def finish(proc, timeout=600):
    """(returncode, stdout not read yet, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    if err is None:
      with open(proc.err_path) as f:
        err = f.read()
    return proc.returncode, out, err

  def run(self, workdir, config=None, args=(), timeout=600, **kw):
    return self.finish(self.start(workdir, config, args, **kw), timeout)


def last_line(text):
  lines = text.strip().splitlines()
  return lines[-1] if lines else ""


def assert_one_line_error(rc, err, *fragments):
  assert rc != 0, err[-2000:]
  assert "Traceback" not in err, err[-3000:]
  line = last_line(err)
  assert line.startswith("error: "), err[-2000:]
  for f in fragments:
    assert f in line, line


def stored_state(workdir, step):
  """A checkpoint's train state as a dict of arrays (whatever mesh or processes saved it)."""
  path = os.path.join(checkpoints.checkpoint_dir(workdir), str(step), "state")
  return checkpoints.restore_state_unsharded(path)


def assert_same_state(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


def tmp_dirs(workdir):
  return glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*"))


def wait_for_line(proc, pattern, timeout=900):
  """Reads proc's stdout until a line contains ``pattern``; returns the lines read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      break
    lines.append(line)
    if pattern in line:
      return lines
  with open(proc.err_path) as f:
    raise AssertionError(f"no line with {pattern!r}: {lines} {f.read()[-2000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  # The suite's cache (conftest: kept between sessions; entries are keyed by the HLO), or
  # $ATTRDIS_TEST_XLA_CACHE.
  cache = os.environ.get("ATTRDIS_TEST_XLA_CACHE") or os.environ["JAX_COMPILATION_CACHE_DIR"]
  runs = Runs(cache, tmp_path_factory.mktemp("run_train_logs"))
  yield runs
  runs.stop_all()  # whatever a failed test left running


@pytest.fixture(scope="module")
def reference(runs, synthetic_data_dir, tmp_path_factory):
  """The uninterrupted run, 1 process × 4 devices, with a checkpoint at every step to compare
  others with (it also fills the compilation cache)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  config = base(synthetic_data_dir)
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = STEPS
  rc, out, err = runs.run(workdir, config)
  assert rc == 0, err[-3000:]
  assert f"step {STEPS}/{STEPS}" in out
  assert checkpoints.complete_steps(workdir) == list(range(1, STEPS + 1))
  return workdir


def test_kill_during_write_then_sigterm_then_resume_equals_uninterrupted(
  runs, reference, synthetic_data_dir, tmp_path
):
  config = base(synthetic_data_dir)
  workdir = str(tmp_path / "w")

  # 1. kill -9 while a checkpoint is being written (one every step, so one nearly always is).
  every_step = base(synthetic_data_dir)
  every_step.checkpoint_every_steps = 1
  for _ in range(3):
    proc = runs.start(workdir, every_step)
    try:
      deadline = time.time() + 300
      while time.time() < deadline and proc.poll() is None:
        if checkpoints.complete_steps(workdir) and tmp_dirs(workdir):
          proc.send_signal(signal.SIGKILL)
          break
        time.sleep(0.002)
    finally:
      proc.kill()
      runs.finish(proc)
    if tmp_dirs(workdir):  # the kill landed mid-write (else: the rename won the race; again)
      break
  assert tmp_dirs(workdir), "never killed during a write"
  survived = checkpoints.complete_steps(workdir)
  assert survived and survived[-1] < STEPS
  # The previous checkpoint is complete and restorable.
  restored = stored_state(workdir, survived[-1])
  assert int(restored["step"]) == survived[-1]

  # 2. Resumed (the leftover temporary folder is removed), then SIGTERM mid-run.
  proc = runs.start(workdir, config)
  seen = wait_for_line(proc, f"step {survived[-1] + 1}/{STEPS}")
  proc.send_signal(signal.SIGTERM)
  rc, out, err = runs.finish(proc)
  out = "".join(seen) + out
  assert rc == 0, err[-3000:]
  stopped = [l for l in out.splitlines() if l.startswith("Preempted (SIGTERM) at step ")]
  assert stopped, out
  step = int(stopped[0].split("at step ")[1].split(":")[0])
  assert survived[-1] < step < STEPS
  assert checkpoints.complete_steps(workdir)[-1] == step  # saved at the current step
  assert not tmp_dirs(workdir)
  assert int(stored_state(workdir, step)["step"]) == step

  # 3. Resumed to the end: the same params and optimizer states as the uninterrupted run.
  rc, out, err = runs.run(workdir, config)
  assert rc == 0, err[-3000:]
  assert_same_state(stored_state(workdir, STEPS), stored_state(reference, STEPS))


def test_nonfinite_loss_stops_or_is_skipped(runs, reference, synthetic_data_dir, tmp_path):
  del reference  # for the compilation cache
  # (num_train_steps stays 12 in both: the learning-rate schedule depends on it, and an
  # unchanged compiled step comes from the cache.)
  stop = base(synthetic_data_dir)
  stop.debug_nan_at_step = 5
  stop.log_every_steps = 4
  stop.checkpoint_every_steps = 3  # step 6 saves before step 8's fetch: flags checked first
  skip = base(synthetic_data_dir)
  skip.debug_nan_at_step = 5
  skip.skip_nonfinite_updates = True
  skip.log_every_steps = 4
  skip.checkpoint_every_steps = 1
  skip.keep_checkpoints = 20
  w_stop, w_skip = str(tmp_path / "stop"), str(tmp_path / "skip")
  # One after the other: the second reads the step the first compiled (the NaN batches are
  # float32, not the reference run's uint8) from the cache instead of compiling it again.
  p_stop = runs.start(w_stop, stop)
  wait_for_line(p_stop, f"step 4/{STEPS}")
  p_skip = runs.start(w_skip, skip)
  rc_stop, _, err_stop = runs.finish(p_stop)
  rc_skip, _, err_skip = runs.finish(p_skip)

  # Stop: status 3, one line naming the step and the terms; the last good checkpoint kept.
  assert rc_stop == errors.EXIT_NONFINITE, err_stop[-3000:]
  assert_one_line_error(
    rc_stop,
    err_stop,
    "Step 5: non-finite loss terms",
    "loss_g=nan",
    "rec=nan",
    "last good checkpoint is step 3",
  )
  assert checkpoints.complete_steps(w_stop) == [3]
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(stored_state(w_stop, 3)))

  # Skip: the run goes on; step 5 leaves params and optimizer states as they were.
  assert rc_skip == 0, err_skip[-3000:]
  rows = [json.loads(l) for l in open(os.path.join(w_skip, "metrics.jsonl"))]
  assert [(r["step"], r["nonfinite_updates"]) for r in rows] == [(4, 0.0), (8, 1.0), (12, 0.0)]
  assert all(np.isfinite(r["loss_g"]) for r in rows)
  s4, s5, s6 = (stored_state(w_skip, s) for s in (4, 5, 6))
  assert int(s5["step"]) == 5
  assert_same_state((s4["params"], s4["opt_state"]), (s5["params"], s5["opt_state"]))
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(s5["params"]), jax.tree.leaves(s6["params"]))
  )
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(stored_state(w_skip, STEPS)))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def metrics_by_step(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)), steps  # each step logged once (by process 0 only)
  return {r["step"]: r for r in rows}


def test_two_processes_equal_one_process_and_agree_on_preemption(
  runs, reference, synthetic_data_dir, tmp_path
):
  """2 processes × 2 CPU devices train on the same global batches as 1 process × 4 devices;
  Ctrl-C on one process stops both at one step with a collective checkpoint.

  Not bit-exact: the cross-process all-reduce (gloo) sums the 4 gradient shards in another
  order than the in-process one. Every kernel agrees to 1e-5 and every loss of every step to
  1e-4 (other data would differ by percents). Biases may drift by up to ~lr per step: the
  conv biases just before an instance norm have a gradient of exactly zero in exact
  arithmetic, so Adam turns float noise in it into ±lr steps (which the norm cancels)."""
  config = base(synthetic_data_dir)
  workdir = str(tmp_path / "mp")
  port = free_port()
  procs = [
    runs.start(
      workdir,
      config,
      devices=2,
      args=[f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
    )
    for i in range(2)
  ]
  seen = wait_for_line(procs[0], f"step 4/{STEPS}")
  procs[1].send_signal(signal.SIGINT)
  (rc0, out0, err0), (rc1, out1, err1) = [runs.finish(p) for p in procs]
  assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
  out0 = "".join(seen) + out0
  stopped = [l for l in out0.splitlines() if l.startswith("Preempted (")]
  assert stopped, out0
  step = int(stopped[0].split("at step ")[1].split(":")[0])
  assert 4 <= step < STEPS
  assert checkpoints.complete_steps(workdir) == sorted({4, step})
  for i in range(2):  # each process saved its own data position
    assert os.path.exists(
      os.path.join(workdir, "checkpoints", str(step), "data", f"process_{i}-of-2.json")
    )
  assert "step " not in out1  # progress lines, metrics, samples: process 0 only
  assert os.path.exists(os.path.join(workdir, "samples", f"step_{step:07d}.png"))

  mine, ref = metrics_by_step(workdir), metrics_by_step(reference)
  assert sorted(mine) == list(range(1, step + 1))
  for k in range(1, step + 1):
    for key in ("loss_g", "loss_d", "loss_c", "rec", "cls_x", "dis", "cls_trn", "adv_g", "gp"):
      assert mine[k][key] == pytest.approx(ref[k][key], rel=1e-4), (k, key)

  a, b = stored_state(workdir, step), stored_state(reference, step)
  assert int(a["step"]) == int(b["step"]) == step
  lr = config.optimizer.learning_rate
  leaves_b = jax.tree.leaves(b["params"])
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a["params"]), leaves_b):
    name, x, y = jax.tree_util.keystr(path), np.asarray(x), np.asarray(y)
    if name.endswith("['kernel']"):
      np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * np.abs(y).max(), err_msg=name)
    else:
      assert np.abs(x - y).max() <= 2 * lr * step, name


def test_full_disk_keeps_last_checkpoint(runs, reference, tmp_path):
  """A checkpoint write that fails (here: files capped at 32 KB, EFBIG, as a full disk
  gives ENOSPC) ends the run with one line; the previous checkpoint stays intact."""
  workdir = str(tmp_path / "full")
  shutil.copytree(reference, workdir)
  for step in range(5, STEPS + 1):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  config = _config_of(reference)
  config.checkpoint_every_steps = 4
  cap = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
  rc, _, err = runs.run(workdir, config, preexec_fn=cap, stderr_pipe=True)
  assert_one_line_error(
    rc,
    err,
    "Could not write the checkpoint of step 8",
    "File too large",
    "last complete checkpoint (step 4) is intact",
  )
  assert checkpoints.complete_steps(workdir) == [1, 2, 3, 4]  # the reference's 1..4; no 8
  assert_same_state(stored_state(workdir, 4), stored_state(reference, 4))


def _config_of(workdir):
  """The config a workdir's latest checkpoint was made with."""
  mngr = checkpoints.manager(workdir, create=False)
  return checkpoints.config_from_json(checkpoints.restore_config(mngr, mngr.latest_step()))


def test_hostile_inputs_give_one_line_errors(runs, reference, synthetic_data_dir, tmp_path):
  config = base(synthetic_data_dir)
  # Another model's checkpoint, a folder that is not an attrdis checkpoint, an unwritable
  # workdir (a file stands where a folder should be: root ignores permissions).
  other_model = str(tmp_path / "other")
  shutil.copytree(reference, other_model)
  wider = base(synthetic_data_dir)
  wider.model.encoder_widths = (4, 8, 16)
  wider.model.classifier_widths = (4, 16)
  garbage = tmp_path / "garbage"
  (garbage / "checkpoints" / "5").mkdir(parents=True)
  (garbage / "checkpoints" / "5" / "state").write_bytes(b"\x00not a checkpoint")
  (tmp_path / "file").write_text("a file")
  cases = [
    (other_model, wider, [], ["incompatible config", "model.encoder_widths"]),
    (str(garbage), config, [], [f"{garbage}/checkpoints/5 is not a readable attrdis checkpoint"]),
    (str(tmp_path / "file" / "w"), config, [], ["--workdir=", "is not writable"]),
    # Overrides of the wrong type or value, unknown fields, a missing config file.
    (
      str(tmp_path / "w"),
      None,
      ["--config.batch_size=eight"],
      ["--config.batch_size=eight", "invalid literal for int()"],
    ),
    (
      str(tmp_path / "w"),
      None,
      ["--config.loss_weights.rec=nan"],
      ["config.loss_weights.rec=nan: must be a finite number"],
    ),
    (
      str(tmp_path / "w"),
      None,
      ["--config.dataset.attributes=identity,expression"],
      ["'identity,expression' is not an attribute name"],
    ),
    (str(tmp_path / "w"), None, ["--config.no_such_field=1"], ["--config.no_such_field"]),
    (
      str(tmp_path / "w"),
      None,
      ["--config=configs/missing.py"],
      ["--config=configs/missing.py: No such file or directory"],
    ),
  ]
  before = sorted(os.listdir(os.path.join(other_model, "checkpoints")))
  procs = [runs.start(w, c, args) for w, c, args, _ in cases]
  for proc, (_, _, _, fragments) in zip(procs, cases):
    rc, _, err = runs.finish(proc)
    assert_one_line_error(rc, err, *fragments)
  assert sorted(os.listdir(os.path.join(other_model, "checkpoints"))) == before
  assert not os.path.exists(tmp_path / "w" / "metrics.jsonl")


def test_global_batches_do_not_depend_on_process_or_worker_count():
  """The invariant behind the 2-process test, on a fake source: the rows each process
  reads, put together, are the 1-process global batch; epochs reshuffle; any worker count."""
  source = [{"id": i} for i in range(37)]
  one = input_pipeline.GlobalBatchRows(source, 8, (0, 8), seed=3)
  halves = [input_pipeline.GlobalBatchRows(source, 8, r, seed=3) for r in ((0, 4), (4, 8))]
  assert one.batches_per_epoch == 4
  for k in range(10):
    want = [r["id"] for r in one[k]]
    assert [r["id"] for h in halves for r in h[k]] == want
    assert len(set(want)) == 8
  epoch0 = sorted(i for k in range(4) for i in one.record_keys(k))
  assert len(set(epoch0)) == 32  # each record at most once per epoch, 37 % 8 dropped
  assert list(one.record_keys(4)) != list(one.record_keys(0))
  # Through grain with workers (each worker reads whole elements): the same sequence.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags
  for workers in (0, 2):
    loader = grain.DataLoader(
      data_source=halves[1],
      sampler=grain.IndexSampler(num_records=8, num_epochs=1),
      operations=[],
      worker_count=workers,
    )
    assert [[r["id"] for r in b] for b in loader] == [
      [r["id"] for r in halves[1][k]] for k in range(8)
    ]


def test_finite_guard_keeps_the_state_and_flags_the_step():
  def step(state, x):
    new = state.replace(
      step=state.step + 1,
      params={"w": state.params["w"] + x},
      opt_state={"m": state.opt_state["m"] * x},
    )
    return new, {"loss": jnp.sum(x)}

  state = ts.TrainState(step=jnp.int32(0), params={"w": jnp.ones(3)}, opt_state={"m": jnp.ones(3)})
  guarded = jax.jit(step_lib.finite_guard(step))
  s1, m1 = guarded(state, jnp.full(3, 2.0))
  np.testing.assert_array_equal(s1.params["w"], 3.0)
  assert float(m1["nonfinite"]) == 0.0
  s2, m2 = guarded(s1, jnp.array([1.0, np.nan, 1.0]))
  np.testing.assert_array_equal(s2.params["w"], s1.params["w"])
  np.testing.assert_array_equal(s2.opt_state["m"], s1.opt_state["m"])
  assert int(s2.step) == 2 and float(m2["nonfinite"]) == 1.0


def test_image_errors_name_the_file(tmp_path):
  """The helpers the sampling CLI uses to turn bad image files into one-line errors."""
  good = tmp_path / "good.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(good.read_bytes()[:2000])
  text = tmp_path / "notes.png"
  text.write_text("hello")
  sixteen = tmp_path / "depth16.png"
  Image.fromarray(np.zeros((8, 8), np.uint16) + 300).save(sixteen)

  def read(path):
    try:
      with Image.open(path) as im:
        im.load()
        if im.mode != "RGB":
          raise errors.unsupported_image_mode(path, im)
    except errors.InputError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise errors.image_error(path, e) from None

  read(good)
  for path, fragment in (
    (truncated, "truncated or corrupt"),
    (text, "not an image file"),
    (sixteen, "mode I;16 (16-bit) is not supported"),
    (tmp_path / "missing.png", "no such file"),
  ):
    with pytest.raises(errors.InputError) as info:
      read(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)
    assert errors.message(info.value) == str(info.value)  # one line, known to the CLIs


# ----------------------------------------------------------------------------------------
# One trainer per workdir.


def test_second_trainer_is_refused_and_the_first_is_untouched(
  runs, reference, synthetic_data_dir, tmp_path
):
  """The first trainer is paused (SIGSTOP) after its first step while a second one starts on
  the same workdir: the second stops with one line naming the first; the first then runs to
  the end exactly as the uninterrupted reference did, and nothing is written twice."""
  config = base(synthetic_data_dir)
  workdir = str(tmp_path / "w")
  first = runs.start(workdir, config)
  seen = wait_for_line(first, f"step 1/{STEPS}")
  os.kill(first.pid, signal.SIGSTOP)
  try:
    t = time.time()
    rc, out, err = runs.run(workdir, config)
    refused_after = time.time() - t
  finally:
    os.kill(first.pid, signal.SIGCONT)
  assert rc == errors.EXIT_ERROR
  assert_one_line_error(
    rc,
    err,
    f"--workdir={workdir} is in use by another trainer "
    f"(pid {first.pid} on host {socket.gethostname()}, started ",
    "one trainer per workdir",
  )
  assert "step " not in out  # it trained nothing
  assert refused_after < 300
  rc, out, err = runs.finish(first)
  assert rc == 0, err[-3000:]
  assert f"step {STEPS}/{STEPS}" in "".join(seen) + out
  rows = metrics_by_step(workdir)  # each step once
  assert sorted(rows) == list(range(1, STEPS + 1))
  assert len(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) == 1
  assert_same_state(stored_state(workdir, STEPS), stored_state(reference, STEPS))
  # The lock went with the run: the file is left empty (no holder).
  assert open(os.path.join(workdir, workdir_lock.LOCK_FILE)).read() == ""


def test_os_lock_dies_with_its_process(tmp_path):
  """A holder killed with SIGKILL leaves no stale lock: the kernel releases it."""
  code = (
    "import sys, time; from attrdis import workdir_lock; "
    "workdir_lock.WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); "
    "time.sleep(600)"
  )
  holder = subprocess.Popen(
    [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirBusyError) as info:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert f"pid {holder.pid} on host {socket.gethostname()}" in str(info.value)
    assert errors.message(info.value) == str(info.value)  # one line, known to the CLIs
  finally:
    holder.kill()
    holder.wait()
  with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
    holder_now = workdir_lock.Holder.parse(open(lock.path).read())
    assert holder_now.pid == os.getpid()
    # In one process too, a second trainer is refused (flock conflicts between open files).
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"pid {os.getpid()} "):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_lock_file_where_the_file_system_has_no_locks(tmp_path, monkeypatch):
  """Where flock() fails (ENOLCK), the lock file's existence is the lock; a holder that is
  gone (pid not running, or reused by a later process) is stale and taken over; a holder on
  another host stands."""
  import fcntl  # pylint: disable=g-import-not-at-top

  def no_locks(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_locks)
  path = tmp_path / workdir_lock.LOCK_FILE
  host = socket.gethostname()

  def holder(**kw):
    fields = dict(
      host=host,
      pid=os.getpid(),
      started=time.time(),
      pid_start=workdir_lock._process_start(os.getpid()),
    )  # pylint: disable=protected-access
    fields.update(kw)
    path.write_text(json.dumps(fields))

  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads(path.read_text())["pid"] == os.getpid()
  with pytest.raises(workdir_lock.WorkdirBusyError) as info:
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert f"pid {os.getpid()} on host {host}" in str(info.value)
  assert f"remove {path}" in str(info.value)
  lock.release()
  assert not path.exists()

  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  cases = [
    (dict(pid=gone.pid, pid_start=None), True),  # not running any more
    (dict(pid_start="1"), True),  # this pid, but a process started at another time
    (dict(), False),  # running: this process
    (dict(host="another-host", pid=1), False),  # cannot be checked from here
    (None, True),  # empty: released by a run with OS locks
  ]
  for fields, stale in cases:
    if fields is None:
      path.write_text("")
    else:
      holder(**fields)
    if stale:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire().release()
    else:
      with pytest.raises(workdir_lock.WorkdirBusyError, match="is in use by another trainer"):
        workdir_lock.WorkdirLock(str(tmp_path)).acquire()
      assert path.exists()  # left as it was


# ----------------------------------------------------------------------------------------
# Damaged checkpoints.


def damage_file(path, how):
  """truncate (half the bytes), delete, or garble (one byte flipped: the size is kept)."""
  data = open(path, "rb").read()
  if how == "truncate":
    with open(path, "wb") as f:
      f.write(data[: len(data) // 2])
  elif how == "delete":
    os.remove(path)
  else:
    garbled = bytearray(data)
    garbled[len(data) // 2] ^= 0xFF
    with open(path, "wb") as f:
      f.write(bytes(garbled))


EXPECTED = {
  "truncate": "truncated (",
  "delete": "missing",
  "garble": "contents changed since it was written (CRC-32 mismatch)",
}


def files_of(folder):
  return sorted(
    os.path.relpath(p, folder)
    for p in glob.glob(os.path.join(folder, "**"), recursive=True)
    if os.path.isfile(p)
  )


def snapshot(folder):
  return {rel: open(os.path.join(folder, rel), "rb").read() for rel in files_of(folder)}


def test_every_damaged_file_is_named(reference, tmp_path):
  """Each file of each item of a checkpoint (state, data position, config), truncated,
  deleted or garbled: the check names that file and what happened to it."""
  source = os.path.join(reference, "checkpoints", "4")
  assert checkpoints.damage(source) is None
  item_files = [rel for rel in files_of(source) if rel.split(os.sep)[0] in checkpoints.ITEMS]
  assert {rel.split(os.sep)[0] for rel in item_files} == set(checkpoints.ITEMS)
  n = 0
  for rel in item_files:
    for how, expected in EXPECTED.items():
      n += 1
      folder = str(tmp_path / str(n))
      shutil.copytree(source, folder)
      damage_file(os.path.join(folder, rel), how)
      why = checkpoints.damage(folder)
      assert why is not None and why.startswith(f"{rel}: ") and expected in why, (rel, how, why)
  # The list of files itself: garbled or truncated, it cannot be read; deleted, the
  # checkpoint's own metadata says that it had one.
  for how in EXPECTED:
    n += 1
    folder = str(tmp_path / str(n))
    shutil.copytree(source, folder)
    damage_file(os.path.join(folder, checkpoints.FILE_LIST), how)
    assert checkpoints.damage(folder).startswith(f"{checkpoints.FILE_LIST}: ")


def representative_files(folder):
  """For each kind of file: the largest array-data file of the state, the data position,
  the config."""
  state = [rel for rel in files_of(folder) if rel.startswith("state" + os.sep)]
  largest = max(state, key=lambda rel: (os.path.getsize(os.path.join(folder, rel)), rel))
  return {
    "state": largest,
    "data": os.path.join("data", "process_0-of-1.json"),
    "config": os.path.join("config", "metadata"),
  }


def test_damaged_checkpoint_every_command_and_resume_from_intact(
  runs, reference, synthetic_data_dir, tmp_path, capsys
):
  """The latest checkpoint (8) damaged, each kind of file in each way: training, sampling
  and evaluation each stop with one line naming it and the newest intact one (7), and
  change nothing; sampling and evaluation hold no lock (the workdir's lock is held by this
  test meanwhile); --config.resume_from_intact=True moves the damaged checkpoint aside and
  ends bit-equal to a run resumed from checkpoint 7 directly (and the reference).

  Training is refused before anything is compiled: run_train.py checks the first case, the
  trainer called in this process the others (the same check, without a process start)."""
  from attrdis import evaluate  # pylint: disable=g-import-not-at-top
  from attrdis import sample  # pylint: disable=g-import-not-at-top
  from attrdis import train  # pylint: disable=g-import-not-at-top

  def copy_until(step, name):
    workdir = str(tmp_path / name)
    shutil.copytree(reference, workdir)
    for s in range(step + 1, STEPS + 1):
      shutil.rmtree(os.path.join(workdir, "checkpoints", str(s)))
    return workdir

  config = _config_of(reference)
  cases = []
  for kind, rel in representative_files(os.path.join(reference, "checkpoints", "8")).items():
    for how in EXPECTED:
      workdir = copy_until(8, f"{kind}_{how}")
      damage_file(os.path.join(workdir, "checkpoints", "8", rel), how)
      cases.append((kind, how, rel, workdir, snapshot(os.path.join(workdir, "checkpoints"))))
  command = runs.start(cases[0][3], config)
  for n, (kind, how, rel, workdir, before) in enumerate(cases):
    named = (
      f"Checkpoint {workdir}/checkpoints/8 is damaged ({rel}: {EXPECTED[how]}",
      "the newest intact checkpoint is step 7",
    )
    if n == 0:
      rc, _, err = runs.finish(command)
    else:
      with pytest.raises(checkpoints.CheckpointError) as info:
        train.train_and_evaluate(config, workdir)
      rc, err = errors.exit_status(info.value), f"error: {errors.message(info.value)}"
      assert "\n" not in err, err
    assert rc == errors.EXIT_ERROR, (kind, how, err[-2000:])
    assert_one_line_error(
      rc,
      err,
      *named,
      "--config.resume_from_intact=True",
      f"{workdir}/{checkpoints.DAMAGED_DIR}",
      "Nothing was changed",
    )
    with workdir_lock.WorkdirLock(workdir):  # readers never take the lock
      for command, status, argv in (
        (
          functools.partial(cli.call, sample.main, sample.FLAGS),
          errors.EXIT_ERROR,
          [
            "--mode=transfer",
            "--source=split:test[:2]",
            "--target=split:test[2:4]",
            "--attributes=",
            f"--out={tmp_path / 'x.png'}",
          ],
        ),
        (
          functools.partial(cli.call, evaluate.main, evaluate.FLAGS),
          errors.EXIT_ERROR,
          ["--no_images"],
        ),
      ):
        assert command([f"--workdir={workdir}", *argv]) == status, (kind, how, command)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert "Traceback" not in err and lines[-1].startswith("error: "), err[-2000:]
        for fragment in named + ("use --step=7.",):
          assert fragment in lines[-1], (fragment, lines[-1])
    assert snapshot(os.path.join(workdir, "checkpoints")) == before, (kind, how)
    assert not os.path.exists(os.path.join(workdir, checkpoints.DAMAGED_DIR))

  # The advice works: sampling the intact step while the lock is held.
  workdir = cases[0][3]
  with workdir_lock.WorkdirLock(workdir):
    out = tmp_path / "step7.png"
    assert (
      cli.call(
        sample.main,
        sample.FLAGS,
        [
          f"--workdir={workdir}",
          "--step=7",
          "--mode=transfer",
          "--source=split:test[:2]",
          "--target=split:test[2:4]",
          "--attributes=expression",
          f"--out={out}",
        ],
      )
      == 0
    ), capsys.readouterr()
    assert out.exists() and json.load(open(tmp_path / "step7.json"))["step"] == 7

  # Resume from the newest intact checkpoint: the damaged one is moved aside, not deleted.
  kind, how, rel, workdir, before = cases[0]
  direct = copy_until(7, "direct")
  p_intact = runs.start(workdir, config, ["--config.resume_from_intact=True"])
  p_direct = runs.start(direct, config)
  (rc, out, err), (rc_d, _, err_d) = runs.finish(p_intact), runs.finish(p_direct)
  assert rc == 0 and rc_d == 0, (err[-3000:], err_d[-3000:])
  moved = os.path.join(workdir, checkpoints.DAMAGED_DIR, "8")
  assert (
    f"Checkpoint {workdir}/checkpoints/8 is damaged ({rel}: {EXPECTED[how]}" in out
    and f"moved to {moved}; resuming from step 7." in out
  ), out
  assert snapshot(moved) == {
    k[len("8/") :]: v for k, v in before.items() if k.startswith("8" + os.sep)
  }
  assert checkpoints.damage(os.path.join(workdir, "checkpoints", str(STEPS))) is None
  assert_same_state(stored_state(workdir, STEPS), stored_state(direct, STEPS))
  assert_same_state(stored_state(workdir, STEPS), stored_state(reference, STEPS))


# ----------------------------------------------------------------------------------------
# Clean exits with grain worker processes.


def stderr_after(err, marker):
  """stderr from the line holding ``marker`` on, without absl's INFO lines."""
  lines = err.splitlines()
  start = next(i for i, l in enumerate(lines) if marker in l)
  return [l for l in lines[start:] if not re.match(r"I\d{4} ", l)]


def test_exits_are_clean_with_worker_processes(runs, reference, synthetic_data_dir, tmp_path):
  """With grain workers (which share the terminal's process group and use shared memory):
  SIGTERM and Ctrl-C sent to the whole group, a second Ctrl-C and an error exit each print
  their one documented line and nothing else: no traceback from a worker, no warning of
  leaked shared memory."""
  del reference  # for the compilation cache
  config = base(synthetic_data_dir)
  config.dataset.num_workers = 1
  nan = base(synthetic_data_dir)
  nan.dataset.num_workers = 1
  nan.debug_nan_at_step = 3
  group = dict(start_new_session=True)  # a process group of its own, as in a terminal
  error = runs.start(str(tmp_path / "nan"), nan, **group)
  procs = {}
  for name, sig, times in (
    ("term", signal.SIGTERM, 1),
    ("int", signal.SIGINT, 1),
    ("twice", signal.SIGINT, 2),
  ):
    # One at a time: each is signalled right after its second step.
    proc = procs[name] = runs.start(str(tmp_path / name), config, **group)
    wait_for_line(proc, f"step 2/{STEPS}")
    os.killpg(proc.pid, sig)
    if times == 2:  # again once the first one was handled (signals do not queue)
      deadline = time.time() + 120
      while "SIGINT received" not in open(proc.err_path).read() and time.time() < deadline:
        time.sleep(0.01)
      os.killpg(proc.pid, sig)
  results = {name: runs.finish(p) for name, p in procs.items()}
  results["nan"] = runs.finish(error)
  for name, (rc, out, err) in results.items():
    assert "Traceback" not in err and "leaked" not in err and "Warning" not in err, (
      name,
      err[-3000:],
    )
  for name, sig in (("term", "SIGTERM"), ("int", "SIGINT")):
    rc, out, err = results[name]
    assert rc == 0, err[-3000:]
    assert last_line(out).startswith(f"Preempted ({sig}) at step "), out
    assert stderr_after(err, f"{sig} received") == [
      f"{sig} received: saving a checkpoint after the current step (Ctrl-C again aborts "
      "without saving)."
    ], err[-3000:]
  rc, out, err = results["twice"]
  assert rc == errors.EXIT_INTERRUPTED, err[-3000:]
  assert stderr_after(err, "SIGINT received")[-1] == (
    "error: interrupted (nothing saved after the last checkpoint)."
  )
  rc, out, err = results["nan"]
  assert rc == errors.EXIT_NONFINITE
  assert_one_line_error(rc, err, "Step 3: non-finite loss terms")
  assert [l for l in stderr_after(err, "error: Step 3") if not re.match(r"[IW]\d{4} ", l)] == [
    last_line(err)
  ]


def test_abort_waits_for_the_batch_being_fetched():
  """A second Ctrl-C that arrives while the loop takes a batch out of grain's shared memory
  aborts once the batch is copied (an abort halfway through would leave the batch's blocks
  to the resource tracker); a third aborts at once; outside a fetch the second aborts at once."""
  from attrdis import train  # pylint: disable=g-import-not-at-top

  preemption = train.Preemption()
  try:
    os.kill(os.getpid(), signal.SIGINT)  # the first: stop after this step
    assert preemption.signal_name == "SIGINT"
    done = []
    with pytest.raises(KeyboardInterrupt, match="nothing saved"):
      with preemption.fetching():
        os.kill(os.getpid(), signal.SIGINT)  # the second, while a batch is being fetched
        done.append("copied")
    assert done == ["copied"]
    preemption = _restart(preemption)
    with pytest.raises(KeyboardInterrupt):
      with preemption.fetching():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the third: at once
        done.append("not reached")
    assert done == ["copied"]
    preemption = _restart(preemption)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  finally:
    preemption.close()


def _restart(preemption):
  """A new handler that has seen one SIGINT (the previous one closed)."""
  from attrdis import train  # pylint: disable=g-import-not-at-top

  preemption.close()
  preemption = train.Preemption()
  os.kill(os.getpid(), signal.SIGINT)
  assert preemption.signal_name == "SIGINT"
  return preemption

"""The persistent compilation cache: where it goes, how it is turned off, and that a second
process reads what the first one compiled."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrdis import compilation_cache
from attrdis import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiles one function with the cache at argv[1] and prints the cache events it saw.
PROGRAM = """
import sys, jax, jax.numpy as jnp
from attrdis import compilation_cache
events = set()
jax.monitoring.register_event_listener(
    lambda name, **kw: events.add(name) if name.startswith('/jax/compilation_cache/') else None)
print(compilation_cache.enable(sys.argv[1]))
jax.jit(lambda x: jnp.tanh(x) @ x.T + 3.0)(jnp.ones((8, 8))).block_until_ready()
print('hit' if '/jax/compilation_cache/cache_hits' in events else 'miss')
"""


@pytest.fixture
def restore_cache_dir():
  before = jax.config.jax_compilation_cache_dir
  yield
  jax.config.update("jax_compilation_cache_dir", before)


def test_default_dir(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compilation_cache.default_dir() == os.path.join(str(tmp_path), "attrdis", "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert compilation_cache.default_dir() == os.path.join(
    os.path.expanduser("~"), ".cache", "attrdis", "jax"
  )
  monkeypatch.setenv(compilation_cache.ENV, "/somewhere")
  assert compilation_cache.default_dir() == "/somewhere"


def test_enable_off_and_unwritable(tmp_path, restore_cache_dir):
  path = str(tmp_path / "a" / "b")
  assert compilation_cache.enable(path) == path and os.path.isdir(path)
  assert jax.config.jax_compilation_cache_dir == path
  for off in ("none", "None", ""):
    assert compilation_cache.enable(off) is None
    assert jax.config.jax_compilation_cache_dir is None
  (tmp_path / "file").write_text("x")
  with pytest.raises(
    errors.InputError,
    match=r"compilation cache .*file/sub.*"
    r"--compilation_cache=none",
  ):
    compilation_cache.enable(str(tmp_path / "file" / "sub"))


def test_second_process_reads_the_first_ones_compilation(tmp_path):
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=ROOT)
  env.pop(compilation_cache.ENV, None)
  cache = str(tmp_path / "cache")

  def run(path):
    out = subprocess.run(
      [sys.executable, "-c", PROGRAM, path],
      env=env,
      cwd=str(tmp_path),
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()

  assert run(cache) == [cache, "miss"]
  assert os.listdir(cache)
  assert run(cache) == [cache, "hit"]
  assert run("none") == ["None", "miss"]


def _step(state, batch):
  """A stand-in for the train step: a pytree of state (donated) and a batch in, the new
  state and a dict of metrics out."""
  w = state["w"] - 0.1 * batch["x"].T @ (batch["x"] @ state["w"] - batch["y"])
  return {"w": w, "n": state["n"] + 1}, {"loss": jnp.mean((batch["x"] @ w - batch["y"]) ** 2)}


def _args():
  rng = np.random.default_rng(0)
  state = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "n": jnp.int32(0)}
  batch = {
    "x": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
    "y": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32),
  }
  return state, batch


def test_traced_program_is_kept_and_read_back(tmp_path, restore_cache_dir):
  compilation_cache.enable(str(tmp_path))
  jitted = jax.jit(_step, donate_argnums=(0,))
  state, batch = _args()
  expected = jax.tree.map(np.asarray, _step(state, batch))
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), (state, batch)
  )
  what = {"function": "step", "lr": 0.1}

  first, source = compilation_cache.compile_traced(jitted, abstract, what, (0,))
  assert source == "traced"
  kept = os.listdir(tmp_path / compilation_cache.TRACED)
  assert len(kept) == 1
  # A second compile (as a new process would) reads the program instead of tracing _step.
  traced = []
  counting = jax.jit(lambda s, b: traced.append(1) or _step(s, b), donate_argnums=(0,))
  second, source = compilation_cache.compile_traced(counting, abstract, what, (0,))
  assert (source, traced) == ("read", [])
  outs = [fn(*jax.tree.map(jnp.array, (state, batch))) for fn in (first, second)]
  for out in outs:
    assert jax.tree.structure(out) == jax.tree.structure(expected)
    # The function's numbers: op by op here, fused there, so float32 rounding apart (dot
    # products of 3 and 5 terms, a mean of 10: a few ulps; rtol 1e-6 = 8 eps).
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  # One program, read or traced: the same bits.
  for a, b in zip(*map(jax.tree.leaves, outs)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The state is donated: its buffers are gone after the call, the batch's are not.
  state2, batch2 = jax.tree.map(jnp.array, (state, batch))
  second(state2, batch2)
  assert state2["w"].is_deleted() and not batch2["x"].is_deleted()
  with pytest.raises(TypeError, match="compiled for arguments"):
    second(state, batch["x"])

  # Another description, other shapes or dtypes: another program.
  compilation_cache.compile_traced(jitted, abstract, dict(what, lr=0.2), (0,))
  wide = (
    abstract[0],
    {
      "x": jax.ShapeDtypeStruct((7, 3), jnp.float32),
      "y": jax.ShapeDtypeStruct((7, 2), jnp.float32),
    },
  )
  compilation_cache.compile_traced(jitted, wide, what, (0,))
  assert len(os.listdir(tmp_path / compilation_cache.TRACED)) == 3


def test_unreadable_traced_program_is_traced_again(tmp_path, restore_cache_dir, caplog):
  compilation_cache.enable(str(tmp_path))
  state, batch = _args()
  args = (state, batch)
  compilation_cache.compile_traced(jax.jit(_step), args, {"function": "step"})
  (kept,) = (tmp_path / compilation_cache.TRACED).iterdir()
  kept.write_bytes(b"not a program")
  fn, source = compilation_cache.compile_traced(jax.jit(_step), args, {"function": "step"})
  assert source == "traced"
  assert "unreadable" in caplog.text and kept.name in caplog.text
  np.testing.assert_allclose(fn(state, batch)[1]["loss"], _step(state, batch)[1]["loss"], rtol=1e-6)
  # Cache off: compiled as it is, nothing kept.
  compilation_cache.enable("none")
  fn, source = compilation_cache.compile_traced(jax.jit(_step), args, {"function": "step"})
  assert source == "traced (no cache)"
  assert [kept.name] == os.listdir(tmp_path / compilation_cache.TRACED)
  np.testing.assert_allclose(fn(state, batch)[1]["loss"], _step(state, batch)[1]["loss"], rtol=1e-6)

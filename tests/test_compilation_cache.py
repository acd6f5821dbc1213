"""The persistent compilation cache: where it goes, how it is turned off, and that a second
process reads what the first one compiled."""

import os
import subprocess
import sys

import jax
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

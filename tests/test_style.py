"""The tree is formatted and linted as pyproject.toml's [tool.ruff] says (``ruff format .``,
``ruff check .``); a failure prints what to change."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUFF = shutil.which("ruff")

needs_ruff = pytest.mark.skipif(
  RUFF is None, reason="ruff is not installed (pip install -e '.[test]')"
)


@needs_ruff
def test_tree_is_formatted():
  out = subprocess.run(
    [RUFF, "format", "--check", "--diff", "."],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, f"run `ruff format .`:\n{out.stdout[-5000:]}{out.stderr[-2000:]}"


@needs_ruff
def test_tree_is_linted():
  out = subprocess.run([RUFF, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, f"run `ruff check .`:\n{out.stdout[-5000:]}{out.stderr[-2000:]}"

"""Test setup (before jax is imported): 4 simulated CPU devices, XLA:CPU tuned to compile fast
(tiny.xla_flags), the compilation cache shared by the tests; the xdist groups; tiny configs."""

import os

from tiny import xla_flags  # imports no JAX

os.environ.setdefault("XLA_FLAGS", xla_flags(4))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiles dominate the suite's time on a CPU: share them between tests, xdist workers and the
# run_train.py subprocesses the tests start (they inherit the environment).
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join("/tmp", f"attrdis-test-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
  """The ``tiny`` synthetic-faces config (16 px), built once per test session."""
  from attrdis_datasets.synthetic_faces import synthetic_faces_dataset_builder as sf

  data_dir = tmp_path_factory.mktemp("tfds")
  sf.Builder(
    config="tiny", data_dir=str(data_dir), file_format="array_record"
  ).download_and_prepare()
  return str(data_dir)


def pytest_itemcollected(item):
  """For ``-n N`` (pytest-xdist, with ``--dist=loadgroup`` from pyproject.toml): the tests of
  a module that use one of its module-scoped fixtures run on one worker, so that the fixture
  (a trained workdir, a built dataset) is made once rather than once per worker. A module
  can name its own group instead (``pytestmark = pytest.mark.xdist_group(...)``); tests that
  share nothing are spread one by one. (Marked as each test is collected: xdist reads the
  groups in its own pytest_collection_modifyitems.)"""
  if item.get_closest_marker("xdist_group") is not None:
    return
  fixtures = getattr(item, "_fixtureinfo", None)
  defs = fixtures.name2fixturedefs.values() if fixtures is not None else ()
  if any(d[-1].scope == "module" for d in defs):
    item.add_marker(pytest.mark.xdist_group(item.module.__name__))

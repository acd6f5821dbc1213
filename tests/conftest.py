"""Test setup (before jax is imported): 4 simulated CPU devices, XLA:CPU at optimisation
level 0 (tiny.xla_flags), the compilation cache shared by the tests; tiny configs."""

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

"""Test setup: 4 simulated CPU devices (before jax is imported) and tiny configs."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiles dominate the suite's time on a CPU: share them between tests, xdist workers and the
# run_train.py subprocesses the tests start (they inherit the environment).
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join("/tmp", f"attrdis-test-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import fcntl  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402


def shared_dir(tmp_path_factory, name, build):
  """A folder that ``build(path)`` fills once per test session, whichever xdist worker asks
  first; the others wait for it and get the same folder (read it, do not write to it).
  Compiles dominate a cold run, and two workers building the same thing at once would each
  compile it."""
  if os.environ.get("PYTEST_XDIST_WORKER") is None:
    path = str(tmp_path_factory.mktemp(name))
    build(path)
    return path
  root = tmp_path_factory.getbasetemp().parent  # the session's, shared by its workers
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # what a failed build left
      path.mkdir()
      build(str(path))
      done.touch()
  return str(path)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
  """The ``tiny`` synthetic-faces config (16 px), built once per test session."""
  from attrdis_datasets.synthetic_faces import synthetic_faces_dataset_builder as sf

  def build(data_dir):
    sf.Builder(config="tiny", data_dir=data_dir, file_format="array_record").download_and_prepare()

  return shared_dir(tmp_path_factory, "tfds", build)

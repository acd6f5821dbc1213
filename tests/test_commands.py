"""Every command keeps one command-line convention (attrdis.cli, attrdis.errors).

For each command, in subprocesses as a user runs it: ``--help`` exits with 0 and its usage
names the command's main flags; an unknown flag exits with 2 and one ``error:`` line; and a
user error (a missing input, a file that cannot be written, ...) exits with 1 and one
``error:`` line. Never a traceback. Then the pieces in this process: the user errors' one base,
a command called again, and the one hook left for a failed checkpoint write.
"""

import asyncio
import dataclasses
import os
import pickle
import subprocess
import sys
import types
from typing import Callable

from absl import flags
import pytest

from attrdis import benchmark
from attrdis import checkpoints
from attrdis import cli
from attrdis import configuration
from attrdis import errors
from attrdis import fid
from attrdis import image_io
from attrdis import inception
from attrdis import sampling
from attrdis import workdir_lock
from attrdis.evaluation import context as evaluation_context
from attrdis.evaluation import networks as evaluation_networks
from attrdis_datasets import vendor
from attrdis_datasets.labelled_images import labelled_images_dataset_builder as lb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Command:
  argv: tuple[str, ...]  # how it is started, before its arguments
  flags: tuple[str, ...]  # what its usage must name
  # (arguments, a fragment of the error line) of a user error, given a temporary folder;
  # None for a command that reads nothing but its flags (then: a flag value out of range,
  # status 2).
  user_error: Callable | None
  bad_value: tuple[str, ...] = ()  # arguments with a bad flag value (status 2)


def module(name):
  return (sys.executable, "-m", name)


def script(path):
  return (sys.executable, os.path.join(ROOT, path))


COMMANDS = {
  "run_train": Command(
    script("run_train.py"),
    ("--config", "--workdir", "--distributed", "--compilation_cache"),
    lambda tmp: (
      ["--config=configs/missing.py", f"--workdir={tmp / 'w'}"],
      "--config=configs/missing.py: No such file or directory",
    ),
  ),
  "sample": Command(
    module("attrdis.sample"),
    ("--workdir", "--mode", "--source", "--target", "--out", "--attributes", "--step"),
    lambda tmp: (
      [f"--workdir={tmp / 'nothing'}", "--mode=random", f"--out={tmp / 'x.png'}"],
      "No checkpoint in",
    ),
  ),
  "fid": Command(
    module("attrdis.fid"),
    (
      "PATH1 PATH2",
      "--weights",
      "--batch-size",
      "--save-stats",
      "--kid",
      "--kid-subsets",
      "--kid-subset-size",
    ),
    lambda tmp: ([str(tmp / "missing"), str(tmp)], "invalid path"),
    bad_value=("a", "b", "--batch-size", "0"),
  ),
  "ablation": Command(
    module("attrdis.ablation"),
    ("--config", "--workdir"),
    lambda tmp: (
      ["--config=configs/ablation.py", f"--workdir={tmp / 'w'}", "--config.embedding=umap"],
      "config.embedding='umap'",
    ),
  ),
  "benchmark": Command(
    module("attrdis.benchmark"),
    ("--config", "--part", "--steps", "--num_classes", "--output"),
    lambda tmp: (
      ["--config=configs/synthetic.py", "--config.dtype=float16", "--nopeak"],
      "config.dtype='float16'",
    ),
  ),
  "synthetic.benchmark": Command(
    module("attrdis.synthetic.benchmark"),
    ("--image_size", "--batch", "--seconds", "--config", "--no_build", "--visibility_sizes"),
    None,
    bad_value=("--image_size=8",),
  ),
  "synthetic.contact_sheet": Command(
    module("attrdis.synthetic.contact_sheet"),
    ("--out", "--image_size", "--zoom"),
    lambda tmp: (
      [f"--out={tmp / 'no' / 'such' / 'sheet.png'}", "--image_size=16"],
      "No such file or directory",
    ),
  ),
  "labelled_images.example": Command(
    module("attrdis_datasets.labelled_images.example"),
    ("--identities", "--size"),
    lambda tmp: ([str(tmp / "a_file" / "faces"), "--size=16"], "Not a directory"),
  ),
  "benchmarks/curves": Command(
    script("benchmarks/curves.py"),
    ("METRIC", "--every"),
    lambda tmp: (["eval/recon/psnr", f"A={tmp}"], "no metrics.jsonl"),
  ),
  "benchmarks/eval_table": Command(
    script("benchmarks/eval_table.py"),
    ("NAME=",),
    lambda tmp: ([f"a={tmp / 'missing.json'}"], "not an evaluator JSON"),
  ),
  "benchmarks/compile_flags": Command(
    script("benchmarks/compile_flags.py"),
    ("--rounds", "--out"),
    None,
    bad_value=("--rounds=0",),
  ),
  "benchmarks/input_storage": Command(
    script("benchmarks/input_storage.py"),
    ("--size", "--num", "--rounds", "--out"),
    None,
    bad_value=("--size=8",),
  ),
  "benchmarks/scaling": Command(
    script("benchmarks/scaling.py"),
    ("--sizes", "--time_sizes", "--max_m"),
    None,
    bad_value=("--max_m=9",),
  ),
  "evaluate": Command(
    module("attrdis.evaluate"),
    (
      "--workdir",
      "--step",
      "--fid_weights",
      "--out",
      "--transfer",
      "--classifier_dir",
      "no_images",
    ),
    lambda tmp: ([f"--workdir={tmp}"], "No checkpoint in"),  # a folder, no checkpoints
    bad_value=("--workdir=w", "--transfer=label"),
  ),
  "evaluation.train_networks": Command(
    module("attrdis.evaluation.train_networks"),
    ("--workdir", "--steps", "--classifier_dir"),
    lambda tmp: ([f"--workdir={tmp / 'nothing'}"], "No checkpoint in"),
    bad_value=("--workdir=w", "--steps=0"),
  ),
}

CASES = ("help", "unknown_flag", "user_error")


def start(command: Command, args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen(
    [*command.argv, *args],
    cwd=ROOT,
    env=env,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def one_error_line(rc, status, err, fragment=""):
  """The status, and stderr that ends with its only ``error:`` line, without a traceback."""
  lines = err.strip().splitlines()
  error_lines = [l for l in lines if l.startswith("error:")]
  assert rc == status, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  assert len(error_lines) == 1 and lines[-1] == error_lines[0], err[-3000:]
  assert fragment in error_lines[0], (fragment, error_lines[0])


def params():
  for name, command in COMMANDS.items():
    for case in CASES:
      yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.mark.parametrize("name,case", params())
def test_command_line_convention(name, case, tmp_path):
  command = COMMANDS[name]
  (tmp_path / "a_file").write_text("a file, not a folder")
  if case == "help":
    proc = start(command, ["--help"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "error:" not in err and "Traceback" not in err, err[-3000:]
    for flag in command.flags:
      assert flag in out, (flag, out)
    return
  if case == "unknown_flag":  # (with the required flags, for parsers that check them first)
    args = command.user_error(tmp_path)[0] if command.user_error is not None else []
    proc = start(command, [*args, "--no_such_flag=1"])
    out, err = proc.communicate(timeout=300)
    one_error_line(proc.returncode, 2, err, "no_such_flag")
    return
  # A user error, or (a command that reads nothing but its flags) a flag value out of range.
  runs = []
  if command.user_error is not None:
    args, fragment = command.user_error(tmp_path)
    runs.append((start(command, args), 1, fragment))
  if command.bad_value:
    runs.append((start(command, command.bad_value), 2, ""))
  assert runs
  for proc, status, fragment in runs:
    out, err = proc.communicate(timeout=300)
    one_error_line(proc.returncode, status, err, fragment)


# ----------------------------------------------------------------------------------------
# The pieces, in this process.


def test_user_errors_derive_from_one_base_and_keep_their_builtin_bases():
  kinds = {  # class: (the builtin base callers may catch, exit status)
    errors.CommandLineError: (Exception, 2),
    errors.InputError: (ValueError, 1),
    image_io.SourceError: (ValueError, 1),
    sampling.SamplingError: (ValueError, 1),
    workdir_lock.WorkdirBusyError: (ValueError, 1),
    lb.FolderDataError: (ValueError, 1),
    lb.BadImageError: (ValueError, 1),
    configuration.ConfigError: (ValueError, 1),
    checkpoints.CheckpointError: (RuntimeError, 1),
    checkpoints.CheckpointWriteError: (RuntimeError, 1),
    fid.FIDError: (Exception, 1),
    inception.WeightsError: (ValueError, 1),
    inception.UnsafePickleError: (pickle.UnpicklingError, 1),
    benchmark.BenchmarkError: (RuntimeError, 1),
    evaluation_context.EvaluationError: (ValueError, 1),
    evaluation_networks.EvalClassifierError: (RuntimeError, 1),
    vendor.MissingManualDataError: (FileNotFoundError, 1),
    vendor.BadImageError: (ValueError, 1),
    vendor.NotEnoughSubjectsError: (ValueError, 1),
  }
  for cls, (builtin, status) in kinds.items():
    e = cls("what is wrong,\nand what to do")
    assert isinstance(e, errors.UserError) and isinstance(e, builtin), cls
    assert errors.message(e) == "what is wrong, and what to do", cls
    assert errors.exit_status(e) == status, cls
  nonfinite = errors.NonFiniteError("Step 3: loss is nan", step=3, terms=("rec",))
  assert isinstance(nonfinite, FloatingPointError) and errors.exit_status(nonfinite) == 3
  assert errors.message(KeyError("a bug")) is None  # a bug keeps its traceback
  # One class per name among them (labelled_images' BadImageError is the vendor one's kind).
  names = [c.__name__ for c in kinds if c is not lb.BadImageError]
  assert len(names) == len(set(names))


def test_a_command_called_again_starts_from_its_defaults(capsys):
  fv = flags.FlagValues()
  flags.DEFINE_multi_string("source", None, "Sources.", flag_values=fv)
  flags.DEFINE_bool("all", False, "All.", flag_values=fv)
  flags.DEFINE_integer("batch-size", 50, "Batch.", lower_bound=1, flag_values=fv)
  seen = []

  def main(argv):
    seen.append((argv[1:], fv.source, fv.all, fv["batch-size"].value))
    if fv.all:
      raise errors.InputError("all: not today")

  assert (
    cli.call(
      main, fv, ["p1", "--source=a", "--source", "b", "--batch-size", "5", "p2"], positional=True
    )
    == 0
  )
  assert cli.call(main, fv, ["--all"]) == 1
  assert capsys.readouterr().err == "error: all: not today\n"
  assert cli.call(main, fv, ["p1"]) == 2  # no positional arguments here
  assert capsys.readouterr().err == "error: unexpected arguments: p1 (see --help)\n"
  assert cli.call(main, fv, ["--batch-size=0"]) == 2
  assert capsys.readouterr().err.startswith("error: flag --batch-size=0: ")
  assert seen == [(["p1", "p2"], ["a", "b"], False, 5), ([], None, True, 50)]
  assert cli.call(main, fv, ["--help"]) == 0
  out = capsys.readouterr().out
  assert "--source" in out and "--[no]all" in out and "--batch-size" in out


def test_only_the_late_callbacks_of_a_failed_checkpoint_write_are_dropped(monkeypatch):
  """The one hook left (see checkpoints._quiet_failed_writes): "Event loop is closed" raised
  in ``call_soon_threadsafe`` is dropped; every other unraisable exception is passed on."""
  passed_on = []
  monkeypatch.setattr(sys, "unraisablehook", passed_on.append)
  monkeypatch.setattr(checkpoints, "_quieted", False)
  checkpoints._quiet_failed_writes()  # pylint: disable=protected-access

  def unraisable(exc, tb):
    return types.SimpleNamespace(
      exc_type=type(exc), exc_value=exc, exc_traceback=tb, err_msg=None, object=None
    )

  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as e:
    late = e
  try:
    raise RuntimeError("Event loop is closed")  # the same text, raised elsewhere
  except RuntimeError as e:
    elsewhere = e
  other = ValueError("another")
  # TensorStore calls from C, so the traceback starts in call_soon_threadsafe.
  sys.unraisablehook(unraisable(late, late.__traceback__.tb_next))
  assert not passed_on
  sys.unraisablehook(unraisable(elsewhere, elsewhere.__traceback__))
  sys.unraisablehook(unraisable(other, None))
  assert [u.exc_value for u in passed_on] == [elsewhere, other]

"""Errors a user can cause, and the one way every command reports them.

Every command (``run_train.py``, ``python -m attrdis.sample``, ``python -m attrdis.fid``, ...)
is started by :func:`attrdis.cli.run`, which parses its absl flags and runs its ``main`` inside
:func:`reported`. :func:`fail` is the one place that writes an error: ``error: <one line>`` on
stderr, after the log lines so far, with no traceback, and the exit status below. It is called

* by the flag parser, for a bad command line;
* by :func:`reported`, for a :class:`UserError` (any subclass, from any module), an absl flag
  error, an ``OSError`` that names a file or a reason (disk full, permissions, a missing file),
  ``MemoryError`` and ``KeyboardInterrupt``.

Anything else is a bug, and keeps its traceback.

Exit statuses:

  0    done (training: also when preempted, with a checkpoint saved);
  1    a user error: an input, config, checkpoint, dataset or file that cannot be used;
  2    a bad command line: an unknown flag, a bad or missing flag value, flags that do not go
       together, missing or extra positional arguments (absl's flag errors,
       :class:`CommandLineError`);
  3    training stopped on a non-finite loss (:class:`NonFiniteError`);
  130  interrupted by Ctrl-C (training: by a second Ctrl-C; the first one saves a checkpoint
       and ends with 0).

A bug ends with Python's own status 1 and its traceback.

Every user-caused error derives from :class:`UserError`, whose ``exit_status`` says which of
the above it ends with; each keeps the builtin base that callers may catch::

  UserError                                     (1)  errors
  ├── CommandLineError                          (2)  errors
  ├── NonFiniteError, FloatingPointError        (3)  errors
  ├── InputError, ValueError                         errors: a file, folder or value given
  │   ├── SourceError                                image_io: images to sample from
  │   ├── SamplingError                              sampling
  │   ├── WorkdirBusyError                           workdir_lock
  │   ├── FolderDataError                            datasets/labelled_images
  │   └── labelled_images.BadImageError (also a vendor.BadImageError)
  ├── ConfigError, ValueError                        configuration
  ├── CheckpointError, RuntimeError                  checkpoints
  │   └── CheckpointWriteError                       checkpoints
  ├── FIDError                                       fid
  ├── WeightsError, ValueError                       inception
  ├── UnsafePickleError, pickle.UnpicklingError      inception
  ├── BenchmarkError, RuntimeError                   benchmark
  ├── EvaluationError, ValueError                    evaluation/context
  ├── EvalClassifierError, RuntimeError              evaluation/networks
  ├── MissingManualDataError, FileNotFoundError      datasets/vendor
  ├── BadImageError, ValueError                      datasets/vendor
  └── NotEnoughSubjectsError, ValueError             datasets/vendor

For image files read on a user's behalf, wrap the read and turn PIL's errors into an
:class:`InputError` that names the file with :func:`image_error`::

    try:
      with Image.open(path) as im:
        im.load()
    except Exception as e:
      raise errors.image_error(path, e) from None

and reject modes the model cannot take with ``errors.unsupported_image_mode(path, im)``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130

_MAX_LEN = 600


class UserError(Exception):
  """An error the user caused and can act on; its message says what to do. A command ends
  with it as one ``error:`` line and ``exit_status``."""

  exit_status = EXIT_ERROR


class CommandLineError(UserError):
  """A command line that cannot be run (flags that do not go together, missing arguments)."""

  exit_status = EXIT_USAGE


class InputError(UserError, ValueError):
  """A file, folder or value a user gave that cannot be used; the message names it."""


class NonFiniteError(UserError, FloatingPointError):
  """Training produced a non-finite loss or update (and was asked to stop on it)."""

  exit_status = EXIT_NONFINITE

  def __init__(self, message: str, step: int, terms: tuple[str, ...]):
    super().__init__(message)
    self.step = step
    self.terms = terms


_EXC_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception)): (.+)$")


def one_line(text: str) -> str:
  """A message squeezed onto one line: for chained/multi-line text, the most telling line."""
  lines = [l.strip() for l in str(text).splitlines() if l.strip()]
  if not lines:
    return ""
  # An embedded "SomeError: message" line (absl's wrapping of an exception raised while
  # parsing a flag, for example) says more than the wrapper's first line.
  inner = [m.group(1) for m in map(_EXC_LINE.match, lines[1:]) if m]
  text = f"{lines[0].rstrip(':')}: {inner[-1]}" if inner else " ".join(lines)
  text = re.sub(r"\s+", " ", text)
  return text if len(text) <= _MAX_LEN else text[: _MAX_LEN - 3] + "..."


_ERRNO = re.compile(r"\[Errno \d+\] ([^:\n]+)")


def _os_error_message(e: OSError) -> str:
  what = e.strerror or one_line(str(e)) or type(e).__name__
  if e.filename is not None:
    target = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
    return f"{target}: {what}"
  return what


def os_reason(e: BaseException) -> str:
  """The OS-level reason in an error's text ("No such file or directory"), else one line."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  found = _ERRNO.findall(str(e))
  return found[-1].strip() if found else one_line(str(e))


def _command_line_errors() -> tuple[type, ...]:
  # Imported here so that importing this module stays cheap (configs import it).
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  return (flags.Error, app.UsageError)


def message(exc: BaseException) -> str | None:
  """The one-line message of a known error (see the module docstring), None for a bug."""
  if isinstance(exc, UserError) or isinstance(exc, _command_line_errors()):
    return one_line(str(exc))
  if isinstance(exc, MemoryError):
    return "out of host memory; use a smaller config.batch_size or image_size."
  if isinstance(exc, OSError) and (exc.filename is not None or exc.strerror):
    return one_line(_os_error_message(exc))
  return None


def exit_status(exc: BaseException) -> int:
  """The exit status a known error ends its command with."""
  if isinstance(exc, UserError):
    return exc.exit_status
  if isinstance(exc, _command_line_errors()):
    return EXIT_USAGE
  return EXIT_ERROR


def fail(text: str, status: int = EXIT_ERROR) -> None:
  """Ends the program with ``error: text`` (one line) on stderr, after the log lines so far."""
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

    absl_logging.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  sys.stdout.flush()
  sys.stderr.write(f"error: {one_line(text)}\n")
  sys.stderr.flush()
  raise SystemExit(status)


@contextlib.contextmanager
def reported():
  """Runs the body; a known error (see the module docstring) ends the program with its
  ``error:`` line and exit status, KeyboardInterrupt with status 130; a bug propagates."""
  try:
    yield
  except KeyboardInterrupt as e:
    detail = one_line(str(e))
    fail(f"interrupted ({detail})." if detail else "interrupted.", EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except
    text = message(e)
    if text is None:
      raise
    # The error line is the last word: library threads still winding down (an asynchronous
    # checkpoint write that failed, say) log nothing after it, and the work they abandoned
    # (orbax's unawaited write coroutines, collected at exit) does not warn after it.
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    fail(text, exit_status(e))


def image_error(path, exc: BaseException) -> InputError:
  """An InputError naming ``path`` for an exception raised while opening/decoding it."""
  name = type(exc).__name__
  text = str(exc)
  if name == "UnidentifiedImageError" or "cannot identify image file" in text:
    why = "not an image file (PIL cannot identify its format)"
  elif isinstance(exc, FileNotFoundError):
    why = "no such file"
  elif isinstance(exc, IsADirectoryError):
    why = "is a folder, not an image file"
  elif isinstance(exc, PermissionError):
    why = "permission denied"
  elif "truncated" in text or isinstance(exc, (SyntaxError, EOFError)) or "broken" in text:
    why = f"truncated or corrupt image file ({one_line(text) or name})"
  elif isinstance(exc, OSError) and exc.strerror:
    why = exc.strerror
  else:
    why = f"cannot be read as an image ({name}: {one_line(text)})"
  return InputError(f"{path}: {why}")


def unsupported_image_mode(path, image, allowed=("RGB",)) -> InputError:
  """An InputError naming ``path`` and its mode, for images of a mode the caller rejects."""
  depth = {
    "I;16": "16-bit",
    "I": "32-bit integer",
    "F": "32-bit float",
    "L": "8-bit grayscale",
    "LA": "grayscale with alpha",
    "RGBA": "RGB with alpha",
    "P": "palette",
    "1": "1-bit",
    "CMYK": "CMYK",
  }.get(image.mode, image.mode)
  return InputError(
    f"{path}: image mode {image.mode} ({depth}) is not supported; give "
    f"{' or '.join(allowed)} images (e.g. convert with PIL: "
    "Image.open(p).convert('RGB').save(q))."
  )

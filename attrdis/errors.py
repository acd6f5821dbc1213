"""One place that turns the errors a user can cause into one-line command-line messages.

Every CLI (``run_train.py``, ``python -m attrdis.sample``, ...) runs its ``main`` as

    from attrdis import errors

    def main(argv):
      with errors.reported():
        ...

    if __name__ == "__main__":
      app.run(main, flags_parser=errors.parse_flags)

A known error then ends the program with ``error: <one line naming the input>`` on stderr
(after any log lines) and a non-zero exit status, and no traceback; anything else (a bug)
keeps its traceback. Known errors are: :class:`attrdis.configuration.ConfigError`,
:class:`attrdis.checkpoints.CheckpointError` (and its write failures), :class:`InputError`
(files and folders a user names: images, datasets), :class:`NonFiniteError`, absl flag
errors, and ``OSError`` that carries a file name (disk full, permissions, missing files).

For image files read on a user's behalf, wrap the read and turn PIL's errors into an
:class:`InputError` that names the file with :func:`image_error`::

    try:
      with Image.open(path) as im:
        im.load()
    except Exception as e:
      raise errors.image_error(path, e) from None

and reject modes the model cannot take with ``errors.unsupported_image_mode(path, im)``.

Exit statuses: 0 finished (or preempted with a checkpoint saved), 1 a known error, 2 a
bad command line, 3 training stopped on a non-finite loss, 130 a second Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130

_MAX_LEN = 600


class InputError(ValueError):
  """A file, folder or value a user gave that cannot be used; the message names it."""


class NonFiniteError(FloatingPointError):
  """Training produced a non-finite loss or update (and was asked to stop on it)."""

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
  return text if len(text) <= _MAX_LEN else text[:_MAX_LEN - 3] + "..."


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


def message(exc: BaseException) -> str | None:
  """The one-line message for a known (user-caused) error, or None for anything else."""
  # Imported here so that importing this module stays cheap (CLIs parse flags first).
  from absl import flags  # pylint: disable=g-import-not-at-top
  from attrdis.configuration import ConfigError  # pylint: disable=g-import-not-at-top
  known: tuple[type, ...] = (ConfigError, InputError, NonFiniteError)
  checkpoints = sys.modules.get("attrdis.checkpoints")
  if checkpoints is not None:
    known += (checkpoints.CheckpointError,)
  if isinstance(exc, known):
    return one_line(str(exc))
  if isinstance(exc, flags.Error):
    return one_line(str(exc))
  if isinstance(exc, MemoryError):
    return "out of host memory; use a smaller config.batch_size or image_size."
  if isinstance(exc, OSError) and (exc.filename is not None or exc.strerror):
    return one_line(_os_error_message(exc))
  return None


def exit_status(exc: BaseException) -> int:
  if isinstance(exc, NonFiniteError):
    return EXIT_NONFINITE
  from absl import flags  # pylint: disable=g-import-not-at-top
  if isinstance(exc, flags.Error):
    return EXIT_USAGE
  return EXIT_ERROR


def fail(text: str, status: int = EXIT_ERROR) -> None:
  """Ends the program with ``error: text`` (one line) on stderr."""
  try:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  sys.stdout.flush()
  sys.stderr.write(f"error: {one_line(text)}\n")
  sys.stderr.flush()
  raise SystemExit(status)


def _orbax_origin(record) -> bool:
  if f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
    return True
  tb = record.exc_info[2] if record.exc_info else None
  while tb is not None:
    if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


class _QuietCheckpointFailures(logging.Filter):
  """A failed checkpoint write is reported once, as the CLI's ``error:`` line: Orbax's
  background threads log it with a traceback (kept: the message; dropped: the traceback),
  and asyncio logs each of the write's unretrieved futures again (dropped)."""

  def filter(self, record):
    if record.name == "asyncio" and "orbax-checkpoint-tmp" in record.getMessage():
      return False
    if record.exc_info and _orbax_origin(record):
      if record.name == "asyncio":
        return False
      record.exc_info, record.exc_text = None, None
    return True


_QUIET = _QuietCheckpointFailures()


def _late_callback_noise(exc_type, exc, tb) -> bool:
  """Tensorstore writes that finish after Orbax closed the event loop of a failed save call
  ``loop.call_soon_threadsafe`` from C, which reports "RuntimeError: Event loop is closed"
  as an unraisable exception, once per write still in flight."""
  tb = tb if tb is not None else getattr(exc, "__traceback__", None)
  if exc_type is not RuntimeError or str(exc) != "Event loop is closed" or tb is None:
    return False
  return tb.tb_frame.f_code.co_name == "call_soon_threadsafe"


def _install_quiet_hooks() -> None:
  for name in ("absl", "asyncio"):
    if _QUIET not in logging.getLogger(name).filters:
      logging.getLogger(name).addFilter(_QUIET)
  if getattr(sys.unraisablehook, "_attrdis_quiet", False):
    return
  original_except, original_unraisable = sys.excepthook, sys.unraisablehook

  def excepthook(exc_type, exc, tb):
    if not _late_callback_noise(exc_type, exc, tb):
      original_except(exc_type, exc, tb)

  def unraisablehook(unraisable):
    if not _late_callback_noise(unraisable.exc_type, unraisable.exc_value,
                                unraisable.exc_traceback):
      original_unraisable(unraisable)

  excepthook._attrdis_quiet = True  # pylint: disable=protected-access
  unraisablehook._attrdis_quiet = True  # pylint: disable=protected-access
  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
  warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited",
                          category=RuntimeWarning)


@contextlib.contextmanager
def reported():
  """Runs the body; a known error ends the program with its one-line message. (For CLIs:
  it also keeps the library noise of a failed checkpoint write, tracebacks from background
  threads, out of the output, for the rest of the process.)"""
  _install_quiet_hooks()
  try:
    yield
  except KeyboardInterrupt:
    fail("interrupted (nothing saved after the last checkpoint).", EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except
    text = message(e)
    if text is None:
      raise
    # The error line is the last word: library threads still winding down (an async
    # checkpoint write that failed, say) log nothing after it.
    logging.disable(logging.CRITICAL)
    fail(text, exit_status(e))


def parse_flags(argv):
  """An ``app.run`` flags parser whose errors are one ``error:`` line (exit status 2)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{one_line(str(e))} (see --helpshort)", EXIT_USAGE)
  except (AttributeError, KeyError) as e:
    # ml_collections' config flags raise these for an override of a field that does not
    # exist (--config.no_such_field=1); name the argument.
    field = str(e).strip("\"' ")
    culprits = [a.split("=", 1)[0] for a in argv[1:]
                if a.startswith("--") and re.search(rf"\.{re.escape(field)}(\.|=|$)",
                                                     a.split("=", 1)[0])]
    shown = culprits[0] if culprits else f"field {field!r}"
    fail(f"{shown}: no such config field ({field!r}); see the config file for the field "
         "names", EXIT_USAGE)


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
  depth = {"I;16": "16-bit", "I": "32-bit integer", "F": "32-bit float",
           "L": "8-bit grayscale", "LA": "grayscale with alpha", "RGBA": "RGB with alpha",
           "P": "palette", "1": "1-bit", "CMYK": "CMYK"}.get(image.mode, image.mode)
  return InputError(f"{path}: image mode {image.mode} ({depth}) is not supported; give "
                    f"{' or '.join(allowed)} images (e.g. convert with PIL: "
                    "Image.open(p).convert('RGB').save(q)).")

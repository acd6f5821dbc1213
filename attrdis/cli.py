"""The command line of every attrdis command: absl flags, ``--help``, one-line errors.

A command module defines its flags on a ``FlagValues`` of its own (so that several commands
can be imported into one process, as the tests do, without their flags clashing), writes its
usage in its module docstring, and ends with one line::

    FLAGS = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "The training workdir.", flag_values=FLAGS)
    ...

    def main(argv):  # absl's main: argv[0] is the program, then the positional arguments
      ...

    if __name__ == "__main__":
      cli.run(main, FLAGS)

:func:`run` is ``absl.app.run`` with a flags parser (:func:`parse`) that

* answers ``--help`` (also ``-h``, ``-?``, ``--helpshort``; ``--helpfull`` adds absl's own
  flags) with the module docstring and the command's flags on stdout, and exit status 0;
* parses the command's flags and absl's own (logging: ``-v``, ``--logtostderr``, ...; and
  ``--flagfile``), and rejects positional arguments unless the command takes them
  (``positional=True``: then its ``main`` checks them and raises
  :class:`attrdis.errors.CommandLineError`);
* turns a bad command line into one ``error: ...`` line and exit status 2;

and runs ``main`` inside :func:`attrdis.errors.reported`, which turns the errors a user can
cause into one ``error: ...`` line and the exit statuses listed in :mod:`attrdis.errors`.
:func:`call` runs a command the same way inside this process and returns its exit status
(for tests).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import warnings
from typing import Any, Callable, NoReturn, Sequence

from absl import app
from absl import flags

from attrdis import errors

Main = Callable[[list[str]], Any]

HELP_ARGS = ("-h", "-?", "-help", "--help", "-helpshort", "--helpshort")
HELPFULL_ARGS = ("-helpfull", "--helpfull")
# absl's help flags (defined by app.run) are answered by parse() before absl sees them.
_ABSL_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")
_REQUIRED = re.compile(r"Flag --(\S+) must have a value other than None")


def run(main: Main, flag_values: flags.FlagValues, *, positional: bool = False) -> None:
  """The command's entry point: parses ``sys.argv`` with :func:`parse`, runs ``main`` inside
  :func:`attrdis.errors.reported` and exits with its status (it does not return)."""
  app.run(
    functools.partial(_run_reported, main),
    flags_parser=functools.partial(parse, flag_values, doc=_doc(main), positional=positional),
  )


def call(
  main: Main, flag_values: flags.FlagValues, argv: Sequence[Any], *, positional: bool = False
) -> int:
  """Runs the command in this process with ``argv`` (the arguments, without the program
  name), as :func:`run` does; returns the exit status instead of exiting."""
  argv = [_program(main)] + [str(a) for a in argv]
  logging_disabled = logging.root.manager.disable
  saved_argv = sys.argv
  try:
    # ml_collections' config flags read their overrides from sys.argv.
    sys.argv = argv
    try:
      args = parse(flag_values, argv, doc=_doc(main), positional=positional)
    finally:
      sys.argv = saved_argv
    with warnings.catch_warnings():  # reported() silences warnings after an error line
      status = _run_reported(main, args)
  except SystemExit as e:
    status = e.code
  finally:
    logging.disable(logging_disabled)  # reported() silences logging after an error line
  if status is None:
    return errors.EXIT_OK
  if not isinstance(status, int):  # sys.exit("text"): Python prints it, status 1
    print(status, file=sys.stderr)
    return errors.EXIT_ERROR
  return status


def _run_reported(main: Main, argv: list[str]) -> int:
  with errors.reported():
    status = main(argv)
  return errors.EXIT_OK if status is None else status


def _doc(main: Main) -> str:
  module = sys.modules.get(main.__module__)
  return (getattr(module, "__doc__", None) or "").strip()


def _program(main: Main) -> str:
  name = main.__module__
  return sys.argv[0] if name == "__main__" else f"python -m {name}"


def parse(
  flag_values: flags.FlagValues, argv: Sequence[str], *, doc: str = "", positional: bool = False
) -> list[str]:
  """Parses ``argv`` (program name first) into ``flag_values``; returns the program name and
  the positional arguments. ``--help`` prints the usage and exits with 0; a bad command line
  ends with one ``error:`` line and exit status 2."""
  argv = list(argv)
  options = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
  if any(a in HELPFULL_ARGS for a in options):
    print_usage(flag_values, doc, full=True)
  elif any(a in HELP_ARGS for a in options):
    print_usage(flag_values, doc)
  _add_absl_flags(flag_values)
  for flag in _own_flags(flag_values):
    flag.unparse()  # a command called again in one process starts from the defaults
  try:
    args = flag_values(argv)
  except flags.Error as e:
    text = errors.one_line(str(e))
    required = _REQUIRED.search(text)
    if required:  # absl: "flag --x=None: Flag --x must have a value other than None."
      text = f"--{required.group(1)} is required"
    errors.fail(f"{text} (see --help)", errors.EXIT_USAGE)
  except (AttributeError, KeyError) as e:
    # ml_collections' config flags raise these for an override of a field that does not
    # exist (--config.no_such_field=1); name the argument.
    errors.fail(_no_such_field(str(e), argv), errors.EXIT_USAGE)
  flags.FLAGS.mark_as_parsed()  # absl's logging, app.run and grain read the global flags
  if len(args) > 1 and not positional:
    errors.fail(f"unexpected arguments: {' '.join(args[1:])} (see --help)", errors.EXIT_USAGE)
  return args


def _no_such_field(text: str, argv: Sequence[str]) -> str:
  field = text.strip("\"' ")
  culprits = [
    a.split("=", 1)[0]
    for a in argv[1:]
    if a.startswith("--") and re.search(rf"\.{re.escape(field)}(\.|=|$)", a.split("=", 1)[0])
  ]
  shown = culprits[0] if culprits else f"field {field!r}"
  return f"{shown}: no such config field ({field!r}); see the config file for the field names"


def _add_absl_flags(flag_values: flags.FlagValues) -> None:
  """Makes absl's own flags (logging, debugging; the same Flag objects, so absl reads what is
  parsed here) part of the command's, where the command has none of that name."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if (
      name != flag.name
      or name in _ABSL_HELP_FLAGS
      or name in flag_values
      or (flag.short_name is not None and flag.short_name in flag_values)
    ):
      continue
    flag_values[name] = flag


def _own_flags(flag_values: flags.FlagValues) -> list[flags.Flag]:
  """The command's flags: those of ``flag_values`` that are not absl's global ones."""
  own = []
  for name in list(flag_values):
    flag = flag_values[name]
    if name == flag.name and not (name in flags.FLAGS and flags.FLAGS[name] is flag):
      own.append(flag)
  return own


def usage(flag_values: flags.FlagValues, doc: str, full: bool = False) -> str:
  """The module docstring, then the command's flags (and absl's own, with ``full``)."""
  listed = flags.FlagValues()
  for flag in sorted(_own_flags(flag_values), key=lambda f: f.name):
    if "." not in flag.name:  # not the --config.FIELD overrides of an earlier call
      listed[flag.name] = flag
  text = [
    doc.replace("``", "") if doc else "usage: see the source",
    "",
    "flags:",
    listed.get_help(prefix="  ", include_special_flags=False),
  ]
  if full:
    _add_absl_flags(flag_values)
    absl_own = flags.FlagValues()
    for name in sorted(set(flag_values) - set(listed)):
      flag = flag_values[name]
      if name == flag.name and "." not in name:
        absl_own[name] = flag
    text += ["", "absl's flags:", absl_own.get_help(prefix="  ", include_special_flags=True)]
  else:
    text += ["", "absl's own flags (logging, --flagfile, ...): --helpfull"]
  return "\n".join(text) + "\n"


def print_usage(flag_values: flags.FlagValues, doc: str, full: bool = False) -> NoReturn:
  sys.stdout.write(usage(flag_values, doc, full))
  sys.stdout.flush()
  raise SystemExit(errors.EXIT_OK)

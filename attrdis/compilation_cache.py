"""JAX's persistent compilation cache, on for every command unless turned off.

A compiled train step, evaluator kernel or sampler is written to a cache folder the first time
and read back by every later process that compiles the same computation on the same kind of
machine: a resumed run, the evaluator and the sampler start without recompiling.

The folder is, in order: the command's ``--compilation_cache=DIR`` flag, JAX's own environment
variable ``JAX_COMPILATION_CACHE_DIR``, or ``$XDG_CACHE_HOME/attrdis/jax`` (``~/.cache/...``).
``none`` (or an empty value) turns the cache off. Only compilations that took at least a
second are written (JAX's default, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``), so small
helper kernels do not fill the folder.
"""

from __future__ import annotations

import os

from attrdis import errors

ENV = "JAX_COMPILATION_CACHE_DIR"
OFF = ("", "none")
FLAG_HELP = (
  f"Folder of JAX's persistent compilation cache ('none': off; default: ${ENV}, "
  "else $XDG_CACHE_HOME/attrdis/jax)."
)


def default_dir() -> str:
  if ENV in os.environ:
    return os.environ[ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "attrdis", "jax")


def enable(path: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache at ``path`` (None: :func:`default_dir`);
  returns the folder, or None when the cache is off. Call before the first compilation."""
  import jax  # pylint: disable=g-import-not-at-top

  path = default_dir() if path is None else path
  if path.strip().lower() in OFF:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise errors.InputError(
      f"compilation cache {path}: {errors.os_reason(e)}; pass --compilation_cache=DIR with a "
      f"writable folder, or --compilation_cache=none (or {ENV}=none) to turn it off."
    ) from None
  jax.config.update("jax_compilation_cache_dir", path)
  return path

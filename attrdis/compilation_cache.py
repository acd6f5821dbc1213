"""JAX's persistent compilation cache, on for every command unless turned off.

A compiled train step, evaluator kernel or sampler is written to a cache folder the first time
and read back by every later process that compiles the same computation on the same kind of
machine: a resumed run, the evaluator and the sampler start without recompiling.

The folder is, in order: the command's ``--compilation_cache=DIR`` flag, JAX's own environment
variable ``JAX_COMPILATION_CACHE_DIR``, or ``$XDG_CACHE_HOME/attrdis/jax`` (``~/.cache/...``).
``none`` (or an empty value) turns the cache off. Only compilations that took at least a
second are written (JAX's default, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``), so small
helper kernels do not fill the folder. The trainer also keeps its traced step there
(``traced/``, :func:`compile_traced`), which JAX's cache cannot skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import tempfile

from absl import logging
import numpy as np

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


# The traced programs: JAX's cache is keyed by the traced program, so every process still
# traces and lowers a step before it can read the step's compiled form (1.5–2 s of the demo's
# start on a 2-core CPU). ``compile_traced`` keeps the traced program itself (``jax.export``'s
# serialized StableHLO) in this subfolder, under a key of everything the tracing depends on.
TRACED = "traced"
# Version of the key and file layout below; bump it when either changes.
_TRACED_FORMAT = 1


def _source_digest() -> str:
  """A digest of attrdis' own modules, whose code the traced programs are made of."""
  root = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for folder, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
          digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()


def traced_key(what, in_tree, leaves) -> str:
  """The key of a traced program: ``what`` (a JSON-able description of the function: its
  config), the arguments' structure, shapes, dtypes and shardings, the code (attrdis'
  modules, the versions of JAX, Flax, optax, NumPy and Python), the devices, and JAX's
  settings but the compilation cache's own."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  described = {
    "format": _TRACED_FORMAT,
    "what": what,
    "in_tree": str(in_tree),
    "args": [
      (tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)), str(x.sharding))
      for x in leaves
    ],
    "source": _source_digest(),
    "versions": [
      jax.__version__,
      jaxlib.__version__,
      flax.__version__,
      optax.__version__,
      np.__version__,
      sys.version,
    ],
    "backend": [jax.default_backend(), devices[0].client.platform_version],
    "devices": [d.device_kind for d in devices] + [jax.process_count()],
    "jax_config": {
      k: repr(v)
      for k, v in sorted(jax.config.values.items())
      if "cache" not in k and "log" not in k
    },
  }
  text = json.dumps(described, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()


def compile_traced(jitted, args: tuple, what, donate_argnums: tuple[int, ...] = ()):
  """``jitted`` compiled for ``args`` (pytrees of ``jax.ShapeDtypeStruct`` with shardings);
  returns ``(call, source)``: ``call(*args)`` runs it on arrays of those shapes, and
  ``source`` says whether the traced program was ``"read"`` from the cache folder,
  ``"traced"`` and written there, or ``"traced (no cache)"``.

  With the cache on and one process, ``jitted`` is traced only when no earlier process traced
  it with the same key (:func:`traced_key`; ``what`` must describe every setting the traced
  function reads besides its arguments); either way the program that runs is the exported
  one, compiled through JAX's persistent cache, so a run computes the same numbers whether
  its trace was read or made. With the cache off, or several processes, this is
  ``jitted.lower(*args).compile()``."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax import export  # pylint: disable=g-import-not-at-top

  folder = jax.config.jax_compilation_cache_dir
  if not folder or jax.process_count() > 1:
    return jitted.lower(*args).compile(), "traced (no cache)"
  leaves, in_tree = jax.tree.flatten(args)
  path = os.path.join(folder, TRACED, traced_key(what, in_tree, leaves))
  exported, out_tree = _read_traced(path)
  source = "read"
  if exported is None:
    trees = []

    def flat(*xs):
      outs, tree = jax.tree.flatten(jitted(*jax.tree.unflatten(in_tree, xs)))
      trees.append(tree)
      return outs

    exported = export.export(jax.jit(flat))(*leaves)
    out_tree = trees[-1]
    _write_traced(path, exported.serialize(), out_tree)
    source = "traced"
  starts = np.cumsum([0] + [len(jax.tree.leaves(a)) for a in args])
  donate = tuple(i for a in donate_argnums for i in range(starts[a], starts[a + 1]))
  compiled = jax.jit(exported.call, donate_argnums=donate).lower(*leaves).compile()

  def call(*arrays):
    flat_args, tree = jax.tree.flatten(arrays)
    if tree != in_tree:
      raise TypeError(f"compiled for arguments {in_tree}, called with {tree}")
    return jax.tree.unflatten(out_tree, compiled(*flat_args))

  return call, source


def _read_traced(path: str):
  """(exported program, output structure) kept at ``path``, or (None, None)."""
  from jax import export  # pylint: disable=g-import-not-at-top

  try:
    with open(path, "rb") as f:
      blob, out_tree = pickle.load(f)
    return export.deserialize(bytearray(blob)), out_tree
  except FileNotFoundError:
    return None, None
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("Traced program %s unreadable (%s); tracing again.", path, e)
    return None, None


def _write_traced(path: str, blob: bytes, out_tree) -> None:
  """Writes atomically (processes sharing the folder see a whole file or none); a folder
  that cannot be written costs the next process a trace, not this run."""
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
      tmp = f.name
      pickle.dump((bytes(blob), out_tree), f)
    os.replace(tmp, path)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("Traced program not kept in %s: %s.", path, errors.os_reason(e))
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)

"""One trainer per workdir: the lock ``W/train.lock``.

Training takes it (process 0 of a run, for all its processes) before it writes anything in the
workdir and holds it until the run ends; a second trainer on the same workdir stops at once,
naming the holder. Sampling, evaluation and the benchmark only read checkpoints and never take
it.

The lock is an OS lock (``fcntl.flock``) on the file: the kernel releases it when the process
ends, however it ends, so a crashed run never leaves a stale lock. The file also holds the
holder's host, pid and start time (JSON), for the message the next trainer prints. On file
systems without OS locks (``flock`` fails with ENOLCK, EOPNOTSUPP or ENOSYS), the file's
existence is the lock: it is created exclusively and removed at the end; a file whose holder is
on this host and no longer running (pid gone, or reused by a newer process) is stale and taken
over. A holder on another host cannot be checked from here: its lock stands until that run ends
or the file is removed by hand.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import time

from attrdis import errors

LOCK_FILE = "train.lock"
# flock() fails with these where the file system has no OS locks (NFS without lockd, some FUSE
# mounts); then the lock file's existence is the lock.
_NO_OS_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusyError(errors.InputError):
  """Another trainer holds the workdir's lock; the message names it."""


def _process_start(pid: int) -> str | None:
  """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None
  where it cannot be read. With the pid it identifies a process: pids are reused."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      stat = f.read().decode("ascii", "replace")
  except OSError:
    return None
  # Field 22; the command name (field 2) is in parentheses and may hold spaces.
  fields = stat[stat.rfind(")") + 2 :].split()
  return fields[19] if len(fields) > 19 else None


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds (or last held) a workdir's lock."""

  host: str
  pid: int
  started: float  # time.time() when the lock was taken
  pid_start: str | None = None  # _process_start(pid) then

  @classmethod
  def me(cls) -> "Holder":
    return cls(socket.gethostname(), os.getpid(), time.time(), _process_start(os.getpid()))

  @classmethod
  def parse(cls, text: str) -> "Holder | None":
    try:
      d = json.loads(text)
      return cls(str(d["host"]), int(d["pid"]), float(d["started"]), d.get("pid_start"))
    except (ValueError, KeyError, TypeError):
      return None

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self)) + "\n"

  def describe(self) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
    return f"pid {self.pid} on host {self.host}, started {when}"

  def is_gone(self) -> bool:
    """True only when this holder is certainly not running: on this host, and its pid is not
    running or now belongs to a process started later."""
    if self.host != socket.gethostname():
      return False
    if not _running(self.pid):
      return True
    now = _process_start(self.pid)
    return self.pid_start is not None and now is not None and now != self.pid_start


def _read_holder(path: str) -> Holder | None:
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return Holder.parse(f.read())
  except OSError:
    return None


def _busy(workdir: str, holder: Holder | None, os_lock: bool) -> WorkdirBusyError:
  path = os.path.join(workdir, LOCK_FILE)
  who = holder.describe() if holder is not None else "its details are not written yet"
  text = (
    f"--workdir={workdir} is in use by another trainer ({who}): one trainer per workdir. "
    "Wait for it to end or stop it, or use another --workdir."
  )
  if not os_lock:
    text += f" (This file system has no OS locks: if that run is gone, remove {path}.)"
  return WorkdirBusyError(text)


class WorkdirLock:
  """``with WorkdirLock(workdir):`` holds ``workdir/train.lock`` (the folder must exist);
  raises :class:`WorkdirBusyError` if another trainer holds it, ``OSError`` if the file cannot
  be created (an unwritable folder)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None
    self._os_lock = True

  def acquire(self) -> "WorkdirLock":
    import fcntl  # pylint: disable=g-import-not-at-top

    me = Holder.me()
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise _busy(self.workdir, _read_holder(self.path), os_lock=True) from None
    except OSError as e:
      os.close(fd)
      if e.errno not in _NO_OS_LOCKS:
        raise
      self._acquire_without_os_locks(me)
      return self
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, me.to_json().encode(), 0)
      os.fsync(fd)
    except OSError:
      os.close(fd)
      raise
    self._fd = fd
    return self

  def _acquire_without_os_locks(self, me: Holder) -> None:
    self._os_lock = False
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      except FileExistsError:
        holder = _read_holder(self.path)
        if holder is not None and not holder.is_gone():
          raise _busy(self.workdir, holder, os_lock=False) from None
        # Stale (its process is gone) or empty (released by a run that had OS locks).
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      try:
        os.write(fd, me.to_json().encode())
        os.fsync(fd)
      finally:
        os.close(fd)
      self._holder = me
      return
    raise _busy(self.workdir, _read_holder(self.path), os_lock=False)

  def release(self) -> None:
    if self._fd is not None:
      try:
        os.ftruncate(self._fd, 0)  # no holder any more (the file stays: see the docstring)
      except OSError:
        pass
      os.close(self._fd)  # releases the OS lock
      self._fd = None
    elif not self._os_lock and getattr(self, "_holder", None) is not None:
      if _read_holder(self.path) == self._holder:
        try:
          os.remove(self.path)
        except OSError:
          pass
      self._holder = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

"""One training process per MODEL_DIR: an advisory lock the kernel drops when the holder dies.

Two writers in one MODEL_DIR would interleave checkpoints and delete each other's
temporary save directories (orbax cleans them when a manager starts). So `train`
takes `flock(LOCK_EX)` on MODEL_DIR/.lock-process_<i>-of-<n> before it touches
anything there. The kernel releases a flock when the holding process exits for any
reason, SIGKILL and OOM included, so a killed run never leaves the lock stuck (its
file stays, the lock does not). A released lock removes its file while still holding it,
so a run leaves nothing behind in MODEL_DIR (a T5X run's, say) unless it was killed; a
process that locked a file removed meanwhile locks the new one instead. The file holds the holder's pid, host and start time
so a refused process can name it.

Limits: flock is local to one machine unless the filesystem forwards it (NFSv4 does,
some FUSE mounts do not); object-store paths (gs://...) are not locked.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys


class RunLockedError(RuntimeError):
  """Another live process trains in this MODEL_DIR."""


class RunLock:
  """Held from `acquire` until `release` or the process ends."""

  def __init__(self, model_dir: str, process_index: int = 0, process_count: int = 1):
    self.path = os.path.join(model_dir, f'.lock-process_{process_index}-of-{process_count}')
    self._fd: int | None = None

  def acquire(self) -> 'RunLock':
    while True:
      fd = self._open_and_lock()
      try:
        if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
          break
      except FileNotFoundError:
        pass
      os.close(fd)  # its holder removed the file as we waited for it: lock the current one
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(_holder_info()).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def _open_and_lock(self) -> int:
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
      raise PermissionError(f'Cannot create the run lock {self.path}: {err.strerror}. MODEL_DIR must be '
                            'writable by the training process.') from err
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise RunLockedError(
          f'Another training process is using MODEL_DIR {os.path.dirname(self.path)}: {holder} '
          f'(lock {self.path}). Wait for it to finish or stop it, or use another MODEL_DIR.') from None
    return fd

  def release(self) -> None:
    if self._fd is not None:
      try:
        os.remove(self.path)  # while still locked: nobody else holds this file
      except FileNotFoundError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'RunLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _holder_info() -> dict:
  return {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'command': ' '.join(sys.argv)[:500]}


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode())
    return (f"pid {info['pid']} on host {info['host']}, started {info['started']} "
            f"({info.get('command', '?')})")
  except (OSError, ValueError, KeyError, TypeError):
    return 'a process that has not yet written its details'


def lock_model_dir(model_dir: str) -> RunLock | None:
  """This process's lock on MODEL_DIR, or None for object-store paths (no flock there)."""
  if '://' in model_dir:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  return RunLock(model_dir, jax.process_index(), jax.process_count()).acquire()

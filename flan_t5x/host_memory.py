"""Host memory reuse for XLA:CPU: freed buffers stay in the process instead of going back to the OS.

Why: XLA:CPU allocates each execution's temporary buffer (2.9 GB for a flan_t5_small train step at
batch 8) and its large intermediates with `malloc` from its worker threads, and frees them when the
execution ends. glibc serves such sizes with a fresh `mmap` and returns them with `munmap`, so
every step touches every page anew: about 960,000 page faults (2.5 s of kernel time) per
flan_t5_small step on a 2-core host, and half the time of a memory-bound op such as a softmax
(`bench/train_throughput.py`, docs/performance.md).

`keep_freed_memory()` sets three glibc malloc parameters, as `MALLOC_ARENA_MAX=1`,
`MALLOC_MMAP_MAX_=0` and `MALLOC_TRIM_THRESHOLD_=-1` would at process start:
- one arena: worker threads' own arenas cannot hold a chunk over 64 MiB and `mmap` it anyway;
- no `mmap` for large requests: they come from the heap and return to it;
- no trimming: freed heap memory is kept for the next step.
The process's resident memory then stays at its peak rather than falling between steps, as with a
caching allocator. It must run before XLA's thread pools start (before JAX's backend is first
used): threads keep the arena they first allocated from.

Only for glibc on Linux; elsewhere (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False


def _glibc():
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  try:
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  except OSError:
    return None


def keep_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse (see the module docstring); True if it did.

  Idempotent. False where the C library is not glibc.
  """
  global _applied
  if _applied:
    return True
  libc = _glibc()
  if libc is None:
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
  failed = [number for number, value in settings if libc.mallopt(number, value) != 1]
  if failed:
    raise OSError(f'glibc mallopt refused parameters {failed}')
  _applied = True
  return True


def applied() -> bool:
  """Whether this process has called `keep_freed_memory()` successfully."""
  return _applied

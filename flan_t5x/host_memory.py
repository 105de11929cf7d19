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
caching allocator.

When: before any thread beyond the main one has allocated (glibc fixes its arenas then, and a later
thread may be handed an arena made earlier), so before TensorFlow or JAX import and start their
thread pools. A job started as `python -m flan_t5x.<job>` gets it from `flan_t5x/__init__.py`
(`keep_freed_memory_for_job`), the first code of the run, on a host without GPU or TPU device
files, unless its command line says `--nokeep_freed_host_memory` (or `=false`).
`runtime.initialize` applies it too, for programs that start the runtime themselves: that call
is early enough only if nothing ran TensorFlow or JAX before.

Only for glibc on Linux; elsewhere (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# The jobs started with `python -m flan_t5x.<job>` whose absl flags include --keep_freed_host_memory
# (runtime.define_flags). convert and compare parse their own arguments and run once, briefly.
JOB_MODULES = frozenset(f'flan_t5x.{job}' for job in ('train', 'eval', 'infer', 'forgetting'))
FLAG = 'keep_freed_host_memory'
_OFF_VALUES = frozenset({'false', '0', 'no', 'f', 'n'})

# Device files of an NVIDIA or ROCm GPU driver.
GPU_DEVICE_FILES = ('/dev/nvidiactl', '/dev/nvidia0', '/dev/kfd')

_applied = False


def is_glibc() -> bool:
  """Whether this process runs on glibc (asked of the C library, without reading any file)."""
  try:
    return platform.system() == 'Linux' and os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
  except (ValueError, OSError, AttributeError):  # no such name here (musl, macOS)
    return False


def _glibc():
  if not is_glibc():
    return None
  return ctypes.CDLL(None)  # the process's own symbols: glibc's mallopt among them


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


def accelerator_kinds_present() -> list[str]:
  """'GPU' / 'TPU' where this machine has their device files (NVIDIA or ROCm driver; TPU chips)."""
  kinds = []
  if any(os.path.exists(p) for p in GPU_DEVICE_FILES):
    kinds.append('GPU')
  if glob.glob('/dev/accel*') or os.path.isdir('/dev/vfio') or os.environ.get('TPU_WORKER_HOSTNAMES'):
    kinds.append('TPU')
  return kinds


def flag_off(argv: list[str]) -> bool:
  """Whether a command line turns --keep_freed_host_memory off (absl's spellings of a false bool)."""
  for arg in argv:
    if arg in (f'--no{FLAG}', f'-no{FLAG}'):
      return True
    for prefix in (f'--{FLAG}=', f'-{FLAG}='):
      if arg.startswith(prefix) and arg[len(prefix):].lower() in _OFF_VALUES:
        return True
  return False


def started_job(orig_argv: list[str]) -> str | None:
  """'flan_t5x.train' for `python [options] -m flan_t5x.train ...` (sys.orig_argv), else None."""
  i = 1
  while i < len(orig_argv) - 1:
    arg = orig_argv[i]
    if arg == '-m':
      return orig_argv[i + 1] if orig_argv[i + 1] in JOB_MODULES else None
    if not arg.startswith('-') or arg == '-c':  # a script or `-c`'s code: not a module run
      return None
    i += 2 if arg in ('-X', '-W') else 1  # the interpreter options that take a separate value
  return None


def keep_freed_memory_for_job(orig_argv: list[str]) -> bool:
  """At a job's start (flan_t5x/__init__.py): `keep_freed_memory()` if this process is a flan_t5x job
  on a host without accelerators whose command line does not turn it off; True if it applied."""
  if started_job(orig_argv) is None or flag_off(orig_argv) or accelerator_kinds_present():
    return False
  return keep_freed_memory()

"""flan-t5x: a T5X-compatible training engine (jobs: train, eval, infer, convert, compare, forgetting, plan)."""
import os
import sys

from flan_t5x import host_memory as _host_memory


def _tf_log_level() -> str:
  """TensorFlow (only the input pipeline here) logs from C++ what says nothing to a job's user: INFO
  lines at import and first ops (CPU instruction sets, oneDNN's numerics note) and, on a machine
  without a GPU driver, `failed call to cuInit` as an error at its first op. Its real failures
  reach Python as exceptions. TF_CPP_MIN_LOG_LEVEL set by the user is kept."""
  has_gpu_driver = any(os.path.exists(p) for p in _host_memory.GPU_DEVICE_FILES)
  return '1' if has_gpu_driver else '3'


os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', _tf_log_level())


def _cpu_only_platforms() -> None:
  """libtpu (the [tpu] extra, for `python -m flan_t5x.plan`) on a host with no TPU and no GPU: JAX
  would load it at its first device query, and libtpu logs errors about the TPU it cannot find.
  Such a host computes on its CPU, so JAX is told so; JAX_PLATFORMS set by the user is kept."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if 'JAX_PLATFORMS' in os.environ or importlib.util.find_spec('libtpu') is None:
    return
  if _host_memory.accelerator_kinds_present():
    return
  os.environ['JAX_PLATFORMS'] = 'cpu'


_cpu_only_platforms()

# TensorFlow's C++ start-up lines (fd 2, before any log setting acts) stay out of jobs and notebooks.
from flan_t5x import quiet as _quiet  # pylint: disable=g-import-not-at-top
_quiet.quiet_tensorflow_start()

# A job (`python -m flan_t5x.train ...`) keeps freed host memory for reuse on CPU-only hosts. This is
# the first code of such a run, before TensorFlow or JAX start threads: later is too late for glibc
# (host_memory.py). Imported as a library, nothing happens here.
_host_memory.keep_freed_memory_for_job(getattr(sys, 'orig_argv', []))

# A preemption notice while a training job starts (imports, gin, the runtime) ends it with the
# preemption exit code, not the signal's default -15 (flan_t5x/preemption.py).
if _host_memory.started_job(getattr(sys, 'orig_argv', [])) == 'flan_t5x.train':
  from flan_t5x import preemption as _preemption
  _preemption.exit_on_signal_outside_training()

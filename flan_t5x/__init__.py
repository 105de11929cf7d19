"""flan-t5x: a T5X-compatible training engine (jobs: train, eval, infer, convert, compare, forgetting)."""
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

# A job (`python -m flan_t5x.train ...`) keeps freed host memory for reuse on CPU-only hosts. This is
# the first code of such a run, before TensorFlow or JAX start threads: later is too late for glibc
# (host_memory.py). Imported as a library, nothing happens here.
_host_memory.keep_freed_memory_for_job(getattr(sys, 'orig_argv', []))

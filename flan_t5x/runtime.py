"""One runtime start for every entry point: the JAX distributed system, TensorFlow kept off accelerators,
host memory kept for reuse on CPU-only hosts (host_memory.py; --keep_freed_host_memory=false: off).

Flags (T5X's names): --multiprocess_gpu, --coordinator_address, --process_count, --process_index,
--initialization_timeout, --tfds_data_dir, plus --heartbeat_timeout_seconds. The distributed system is started when

- `--multiprocess_gpu` or `--coordinator_address` is given (explicit address, count and index;
  the same three can come from FLAN_COORDINATOR_ADDRESS / FLAN_PROCESS_COUNT / FLAN_PROCESS_INDEX),
- or the job runs under SLURM with more than one task, or on a multi-host Cloud TPU VM slice:
  JAX's own cluster detection then finds the coordinator, count and index.

A single process on one machine starts nothing. Every host then logs one line naming its index
and its devices.
"""

from __future__ import annotations

import os
import socket
import sys

from absl import flags
from absl import logging

from flan_t5x import host_memory
from flan_t5x import quiet

_FLAGS_DEFINED = False


def define_flags() -> None:
  """Defines the runtime flags once (every job's `main` goes through gin_utils.run, which calls this)."""
  global _FLAGS_DEFINED
  if _FLAGS_DEFINED or 'multiprocess_gpu' in flags.FLAGS:
    _FLAGS_DEFINED = True
    return
  flags.DEFINE_bool('multiprocess_gpu', False,
                    'Start jax.distributed with --coordinator_address, --process_count and --process_index '
                    '(GPU nodes, or CPU processes on one machine).')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (FLAN_COORDINATOR_ADDRESS).')
  flags.DEFINE_integer('process_count', None, 'Number of processes (FLAN_PROCESS_COUNT).')
  flags.DEFINE_integer('process_index', None, 'Index of this process, 0..count-1 (FLAN_PROCESS_INDEX).')
  flags.DEFINE_bool('keep_freed_host_memory', True,
                    'On a CPU-only host, make glibc keep freed memory for reuse instead of unmapping it '
                    '(flan_t5x/host_memory.py: XLA:CPU frees and re-faults its buffers every step). '
                    'Off: the C library\'s defaults.')
  flags.DEFINE_integer('initialization_timeout', None,
                       'Seconds jax.distributed.initialize waits for every process (T5X\'s flag; None: JAX\'s '
                       'default).')
  flags.DEFINE_string('tfds_data_dir', None,
                      'TFDS data directory for the tasks\' TFDS sources (T5X\'s flag: '
                      'seqio.set_tfds_data_dir_override); TFDS_DATA_DIR does the same.')
  flags.DEFINE_integer('heartbeat_timeout_seconds', 100,
                       'A process that stops answering for this long (killed, preempted) makes every '
                       'other process exit with an error instead of waiting forever.')
  _FLAGS_DEFINED = True


def _flag(name: str, env: str | None = None, cast=str):
  value = flags.FLAGS[name].value if name in flags.FLAGS and flags.FLAGS.is_parsed() else None
  if value is None and env and os.environ.get(env):
    value = cast(os.environ[env])
  return value


def cluster_environment() -> str | None:
  """'slurm' or 'tpu_vm' when the process runs in a multi-process cluster JAX can detect, else None."""
  if int(os.environ.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_JOB_ID' in os.environ:
    return 'slurm'
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return 'tpu_vm'
  return None


def initialize(multiprocess: bool | None = None, coordinator_address: str | None = None,
               process_count: int | None = None, process_index: int | None = None,
               heartbeat_timeout_seconds: int | None = None, keep_freed_host_memory: bool | None = None
               ) -> None:
  """Starts the distributed runtime if this job is one of several processes; idempotent.

  On a host without accelerators it first makes glibc keep freed memory (host_memory.py), unless
  `keep_freed_host_memory` (--keep_freed_host_memory) is False. A job started with
  `python -m flan_t5x.<job>` has had it since its first line; elsewhere this call is early enough
  only if nothing ran TensorFlow or JAX before it.
  """
  keep = keep_freed_host_memory if keep_freed_host_memory is not None else _flag('keep_freed_host_memory')
  if keep is not False and not host_memory.applied() and not host_memory.accelerator_kinds_present():
    host_memory.keep_freed_memory()
  import jax  # pylint: disable=g-import-not-at-top
  _hide_accelerators_from_tensorflow()
  quiet.drop_known_noise()
  multiprocess = bool(multiprocess if multiprocess is not None else _flag('multiprocess_gpu'))
  coordinator_address = coordinator_address or _flag('coordinator_address', 'FLAN_COORDINATOR_ADDRESS')
  process_count = process_count if process_count is not None else _flag(
      'process_count', 'FLAN_PROCESS_COUNT', int)
  process_index = process_index if process_index is not None else _flag(
      'process_index', 'FLAN_PROCESS_INDEX', int)
  heartbeat = heartbeat_timeout_seconds or _flag('heartbeat_timeout_seconds', cast=int) or 100
  timeout = _flag('initialization_timeout', cast=int)
  extra = {'initialization_timeout': timeout} if timeout else {}
  if timeout is not None and timeout < 1:
    raise ValueError(f'--initialization_timeout={timeout}: give a number of seconds, at least 1.')
  tfds_data_dir = _flag('tfds_data_dir')
  if tfds_data_dir:
    import seqio  # pylint: disable=g-import-not-at-top
    seqio.set_tfds_data_dir_override(tfds_data_dir)
  if not _distributed_started():
    if multiprocess or coordinator_address:
      missing = [name for name, value in (('--coordinator_address', coordinator_address),
                                          ('--process_count', process_count),
                                          ('--process_index', process_index)) if value is None]
      if missing:
        raise ValueError(f'A multi-process run needs {", ".join(missing)} (or FLAN_COORDINATOR_ADDRESS, '
                         'FLAN_PROCESS_COUNT, FLAN_PROCESS_INDEX).')
      if not 0 <= process_index < process_count:
        raise ValueError(f'--process_index={process_index} is outside 0..{process_count - 1}.')
      logging.info('jax.distributed: coordinator %s, process %d of %d.', coordinator_address,
                   process_index, process_count)
      jax.distributed.initialize(coordinator_address, num_processes=process_count, process_id=process_index,
                                 heartbeat_timeout_seconds=heartbeat, **extra)
    elif cluster_environment():
      logging.info('jax.distributed: detected %s.', cluster_environment())
      jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat, **extra)
  # A log line (stderr): stdout stays for a job's own output, e.g. convert's JSON summary.
  print(host_line(), file=sys.stderr, flush=True)


def _distributed_started() -> bool:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client is not None


def host_line() -> str:
  """'[flan_t5x] process i/n on HOST: k local devices (...) of m' — what each host prints once; it
  ends with '; host memory kept for reuse' where host_memory.py applied."""
  import jax  # pylint: disable=g-import-not-at-top
  local = jax.local_devices()
  kinds = sorted({d.device_kind for d in local})
  return (f'[flan_t5x] process {jax.process_index()}/{jax.process_count()} on {socket.gethostname()}: '
          f'{len(local)} local {"/".join(kinds)} devices (ids {[d.id for d in local]}) of '
          f'{jax.device_count()} in all' + ('; host memory kept for reuse' if host_memory.applied() else ''))


def _hide_accelerators_from_tensorflow() -> None:
  """The input pipeline runs TF on the host; it must not claim GPU memory or TPU chips JAX needs.

  Only kinds the machine has are hidden (listing them is a device probe of its own).
  """
  kinds = host_memory.accelerator_kinds_present()
  if not kinds:
    return
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for kind in kinds:
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialized, or no such device type
      pass


def is_primary() -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier across processes (a no-op with one process)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)

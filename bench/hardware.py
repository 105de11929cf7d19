"""What the benchmarks record about the machine and a compiled program.

`machine_record()` goes into every benchmark's JSON (bench_results.write_json) and its one-line
summary is printed before every benchmark's table, so that two sets of numbers can be told apart
afterwards: CPU model and SIMD flags, cores, memory, measured fp32 matmul peaks of XLA and torch,
library versions, XLA flags, whether our process keeps freed host memory (flan_t5x/host_memory.py),
the load average and the commit measured.
"""
import argparse
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

# The packages whose versions decide a benchmark's numbers (absent ones are recorded as None).
VERSIONED_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'tensorflow',
                      'seqio', 'torch', 'transformers', 'peft')
# The environment that changes what XLA, TensorFlow or torch do on a CPU.
RECORDED_ENV = ('XLA_FLAGS', 'JAX_PLATFORMS', 'JAX_ENABLE_X64', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS',
                'TF_NUM_INTEROP_THREADS', 'TF_NUM_INTRAOP_THREADS', 'ONEDNN_MAX_CPU_ISA')
# /proc/cpuinfo flags that decide which matmul and elementwise kernels run.
SIMD_FLAG_PREFIXES = ('sse4', 'avx', 'fma', 'f16c', 'amx', 'vnni')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from flan_t5x import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position  (standard library only)

PEER_MALLOC_CHOICES = ('default', 'kept', 'both')


def add_host_memory_arguments(parser: argparse.ArgumentParser, peer: bool = True) -> None:
  """--keep_freed_host_memory (ours) and, with `peer`, --peer_malloc (the torch peer): the two sides'
  glibc settings. Ours is applied before argparse runs (`keep_freed_host_memory_unless_disabled`);
  `check_host_memory_argument` checks that the parsed value agrees."""
  parser.add_argument('--keep_freed_host_memory', action=argparse.BooleanOptionalAction, default=True,
                      help='ours: glibc keeps freed memory for reuse (flan_t5x/host_memory.py), as '
                           "flan_t5x's jobs do on CPU-only hosts; --no-keep_freed_host_memory (in full): "
                           "glibc's defaults")
  if peer:
    parser.add_argument('--peer_malloc', choices=PEER_MALLOC_CHOICES, default='both',
                        help="the peer with glibc's defaults (what a torch user gets), with the same "
                             'settings as ours (kept), or both, each in its own child process')


def keep_freed_host_memory_unless_disabled(argv: list[str]) -> bool:
  """What a benchmark does first, before it imports JAX or TensorFlow (glibc fixes its arenas when
  threads first allocate: host_memory.py): keep freed memory, as the jobs do, unless `argv` has
  --no-keep_freed_host_memory. True if applied."""
  return '--no-keep_freed_host_memory' not in argv and host_memory.keep_freed_memory()


def check_host_memory_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """An error where the parsed --keep_freed_host_memory disagrees with what the top of the benchmark
  applied: argparse accepts an abbreviation (--no-keep) that the check of the raw argv does not see."""
  if not args.keep_freed_host_memory and host_memory.applied():
    parser.error('spell --no-keep_freed_host_memory out in full: it is read from the command line '
                 'before JAX starts, where abbreviations are not recognized')


def peer_malloc_settings(args: argparse.Namespace) -> list[bool]:
  """The peer's glibc settings to run: [False] (default), [True] (kept) or [False, True]."""
  return {'default': [False], 'kept': [True], 'both': [False, True]}[args.peer_malloc]


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
  """The best fp32 `size` x `size` matmul rate (FLOP/s) on JAX's default device: MFU's denominator."""
  import jax  # pylint: disable=g-import-not-at-top  (callers keep JAX out of their parent process)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jnp.ones((size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - tick)
  return 2 * size ** 3 / best


def xla_matmul_peak_flops_in_child() -> float:
  """matmul_peak_flops() in a child process: the benchmark's own process keeps JAX out (data
  benchmarks) and its XLA state untouched; the child inherits XLA_FLAGS."""
  code = ('import sys; sys.path.insert(0, sys.argv[1]); import hardware; '
          'print(hardware.matmul_peak_flops())')
  result = subprocess.run([sys.executable, '-c', code, os.path.dirname(os.path.abspath(__file__))],
                          capture_output=True, text=True, check=False, timeout=600)
  if result.returncode != 0:
    raise RuntimeError(f'measuring the XLA matmul peak failed: {result.stderr[-2000:]}')
  return float(result.stdout.strip().splitlines()[-1])


def torch_matmul_peak_flops(size: int = 2048, repeats: int = 10) -> tuple[float | None, str]:
  """torch's best fp32 matmul rate on all cores, in the torch child process; (None, why) without torch."""
  from flan_t5x import hf_peer_client  # pylint: disable=g-import-not-at-top
  try:
    response, _ = hf_peer_client.call('matmul-peak', {'size': size, 'repeats': repeats,
                                                      'num_threads': os.cpu_count() or 1})
  except hf_peer_client.HFPeerUnavailable:
    return None, "torch is not installed (pip install -e '.[bench]')"
  return response['matmul_peak_flops'], f"torch {response['torch']}, {response['num_threads']} threads"


def cpu_description() -> dict:
  """CPU model, family/model/stepping and SIMD flags from /proc/cpuinfo (Linux), else `platform`."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if not line.strip():
          break  # the first processor describes them all on the machines benchmarked here
        key, _, value = line.partition(':')
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  flags = fields.get('flags', '').split()
  return {'model_name': fields.get('model name') or platform.processor() or platform.machine(),
          'vendor': fields.get('vendor_id'), 'family': fields.get('cpu family'),
          'model': fields.get('model'), 'stepping': fields.get('stepping'),
          'simd_flags': sorted(f for f in flags if f.startswith(SIMD_FLAG_PREFIXES)),
          'avx512': any(f.startswith('avx512') for f in flags), 'machine': platform.machine()}


def _memory_gib() -> float | None:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return None


def _commit() -> str | None:
  """The commit measured, with '+dirty' when the tree has changes (None outside a git checkout)."""
  try:
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return head + ('+dirty' if dirty else '')


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_record(measure_peaks: bool = True) -> dict:
  """The machine a benchmark ran on (computed once per process; the peaks take a few seconds)."""
  return _machine_record(bool(measure_peaks))


@functools.cache
def _machine_record(measure_peaks: bool) -> dict:
  record = {
      'cpu': cpu_description(),
      'cpu_count': os.cpu_count(),
      'usable_cpus': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
      'memory_gib': _memory_gib(),
      'load_average_at_start': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
      'platform': platform.platform(), 'python': platform.python_version(),
      'versions': {p: _version(p) for p in VERSIONED_PACKAGES},
      'environment': {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
      'keep_freed_host_memory': host_memory.applied(),
      'commit': _commit(),
  }
  if measure_peaks:
    record['xla_matmul_peak_flops'] = xla_matmul_peak_flops_in_child()
    record['torch_matmul_peak_flops'], record['torch_matmul_note'] = torch_matmul_peak_flops()
  return record


def finish_record(record: dict) -> dict:
  """The record with the load average at the end added: a busy machine shows in either."""
  return {**record, 'load_average_at_end': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None}


def summary_line(record: dict) -> str:
  """One line for the top of a benchmark's printed output."""
  cpu = record['cpu']
  simd = 'AVX-512' if cpu['avx512'] else ('AVX2' if 'avx2' in cpu['simd_flags'] else 'no AVX2')
  parts = [f"{cpu['model_name']} (family {cpu['family']} model {cpu['model']}, {simd})",
           f"{record['cpu_count']} cores", f"{record['memory_gib']:.0f} GiB" if record['memory_gib'] else None]
  if 'xla_matmul_peak_flops' in record:
    torch_peak = record['torch_matmul_peak_flops']
    parts.append(f"fp32 matmul peak XLA {record['xla_matmul_peak_flops'] / 1e9:.0f} GFLOP/s, torch "
                 + (f'{torch_peak / 1e9:.0f} GFLOP/s' if torch_peak else 'not measured'))
  versions = record['versions']
  parts.append(', '.join(f'{p} {versions[p]}' for p in ('jax', 'flax', 'torch', 'transformers') if versions.get(p)))
  parts.append(f"XLA_FLAGS={record['environment'].get('XLA_FLAGS', '(unset)')}")
  parts.append('host memory kept (glibc)' if record.get('keep_freed_host_memory') else 'glibc malloc defaults')
  load = record.get('load_average_at_start')
  if load:
    parts.append(f'load {load[0]:.2f}')
  commit = record['commit'] or 'unknown'
  parts.append(f"commit {commit[:12]}{'+dirty' if commit.endswith('+dirty') else ''}")
  return 'machine: ' + '; '.join(p for p in parts if p)


def compiled_peak_bytes(compiled) -> int | None:
  """XLA's memory plan of a compiled program: arguments + outputs + temporaries - donated aliases."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
             - stats.alias_size_in_bytes)


def ratio_at_full_mfu(peer_seconds: float, our_flops: float, peak_flops: float | None) -> float | None:
  """ours/peer if our `our_flops` ran at `peak_flops` (100% MFU) against the peer's measured time: the
  most a ratio target can be on this machine without doing less work. None without a measured peak."""
  if not peak_flops or not our_flops:
    return None
  return peer_seconds / (our_flops / peak_flops)

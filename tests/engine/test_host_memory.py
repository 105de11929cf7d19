"""Host memory reuse (flan_t5x/host_memory.py): XLA:CPU's freed buffers are not faulted in anew each call."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from flan_t5x import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLIBC = host_memory.is_glibc()
needs_glibc = pytest.mark.skipif(not GLIBC or bool(host_memory.accelerator_kinds_present()),
                                 reason='glibc malloc parameters, applied on hosts without accelerators')

# A fresh process, set up as a job starts: the settings first, then what `python -m flan_t5x.train`
# imports, then JAX's backend. Each call of `f` allocates 64 MiB buffers (output and temporaries).
# Counted: the page faults of each of calls 11-40. Under glibc's defaults the buffers are unmapped
# after each call and faulted in again by the next, so every call faults. Kept, most calls fault
# nothing; a few still grow the heap by a buffer, because XLA frees buffers asynchronously and a
# call may start before the last one's frees land (more often on a loaded machine), so the test
# reads the median call, not the sum.
_PROBE = r'''
import json, resource, sys
from flan_t5x import host_memory
if sys.argv[1] == 'keep':
  host_memory.keep_freed_memory()
from flan_t5x import gin_utils, runtime, train
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.cumsum(jnp.exp(x)[::-1]))
x = jnp.ones((16 * 2**20,), jnp.float32)
for _ in range(10):
  f(x).block_until_ready()
faults = []
for _ in range(30):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'faults': faults, 'applied': host_memory.applied()}))
'''


def _env() -> dict:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
  env.pop('MALLOC_ARENA_MAX', None)
  env['XLA_FLAGS'] = ''  # XLA's defaults (the engine tests' conftest lowers the optimization level)
  return env


def _probe(mode: str) -> dict:
  proc = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True, env=_env(),
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@needs_glibc
def test_kept_memory_is_not_faulted_in_again_each_call():
  default, kept = _probe('default'), _probe('keep')
  assert not default['applied'] and kept['applied']
  buffer_pages = 16_384  # a 64 MiB buffer in pages of 4 KiB
  assert min(default['faults']) > buffer_pages, default
  assert statistics.median(kept['faults']) < buffer_pages / 100, (kept, default)


@needs_glibc
def test_a_job_keeps_freed_memory_from_its_first_line_unless_its_command_line_says_no(tmp_path):
  """`python -m flan_t5x.train` as a user runs it; its per-host line says whether the settings hold.
  (The run stops at the missing gin file, after the runtime started.)"""
  def host_line(*flags):
    proc = subprocess.run([sys.executable, '-m', 'flan_t5x.train', '--gin_file=missing.gin', *flags],
                          cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300, check=False)
    assert proc.returncode != 0 and 'missing.gin' in proc.stderr, proc.stderr[-3000:]
    [line] = [l for l in proc.stderr.splitlines() if l.startswith('[flan_t5x] process 0/1')]
    return line
  assert host_line().endswith('; host memory kept for reuse')
  assert 'host memory' not in host_line('--keep_freed_host_memory=false')  # (spellings: below)


def test_only_flan_t5x_jobs_started_with_dash_m_count_as_jobs():
  assert host_memory.started_job(['python', '-m', 'flan_t5x.train', '--gin_file=a.gin']) == 'flan_t5x.train'
  assert host_memory.started_job(['python', '-X', 'importtime', '-m', 'flan_t5x.eval']) == 'flan_t5x.eval'
  assert host_memory.started_job(['python', '-u', '-m', 'flan_t5x.eval']) == 'flan_t5x.eval'
  assert host_memory.started_job(['python', '-m', 'flan_t5x.hf_peer', 'probe', 'r.json']) is None
  assert host_memory.started_job(['python', '-m', 'pytest', '-m', 'flan_t5x.train']) is None
  assert host_memory.started_job(['python', 'script.py', '-m', 'flan_t5x.train']) is None
  assert host_memory.started_job(['python', '-c', 'pass']) is None
  assert host_memory.started_job([]) is None


@pytest.mark.parametrize('argv, off', [
    ([], False), (['--keep_freed_host_memory'], False), (['--keep_freed_host_memory=true'], False),
    (['--nokeep_freed_host_memory'], True), (['--keep_freed_host_memory=false'], True),
    (['--keep_freed_host_memory=0'], True), (['-nokeep_freed_host_memory'], True),
])
def test_the_command_line_can_turn_it_off(argv, off):
  assert host_memory.flag_off(['python', '-m', 'flan_t5x.train', *argv]) is off


def test_keep_freed_memory_is_idempotent_and_says_whether_it_applied():
  first = host_memory.keep_freed_memory()
  assert first is GLIBC and host_memory.keep_freed_memory() is first
  assert host_memory.applied() is first

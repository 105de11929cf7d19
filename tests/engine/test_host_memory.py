"""Host memory reuse (flan_t5x/host_memory.py): XLA:CPU's freed buffers are not faulted in anew each call."""
import json
import os
import platform
import subprocess
import sys

import pytest

from flan_t5x import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLIBC = platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc'

# A fresh process: the settings must come before JAX's backend starts. Each call of `f` allocates
# 64 MiB buffers (output and temporaries). Counted: the page faults of calls 21-30. Under glibc's
# defaults the buffers are unmapped after each call and faulted in again by the next; kept, the heap
# takes a few calls to grow to a size every call fits in (buffers are freed asynchronously), then
# calls fault nothing.
_PROBE = r'''
import json, resource, sys
from flan_t5x import runtime
runtime.initialize(keep_freed_host_memory=sys.argv[1] == 'keep')
from flan_t5x import host_memory
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.cumsum(jnp.exp(x)[::-1]))
x = jnp.ones((16 * 2**20,), jnp.float32)
for _ in range(20):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  f(x).block_until_ready()
print(json.dumps({'faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  'applied': host_memory.applied()}))
'''


def _probe(mode: str) -> dict:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
  env.pop('MALLOC_ARENA_MAX', None)
  env['XLA_FLAGS'] = ''  # XLA's defaults (the engine tests' conftest lowers the optimization level)
  proc = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True, env=env,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason='the settings are glibc malloc parameters')
def test_kept_memory_is_not_faulted_in_again_each_call():
  default, kept = _probe('default'), _probe('keep')
  assert not default['applied'] and kept['applied']
  assert default['faults'] > 10 * 16_384, default  # a 64 MiB buffer is 16,384 pages of 4 KiB
  assert kept['faults'] < default['faults'] / 4, (kept, default)


def test_keep_freed_memory_is_idempotent_and_says_whether_it_applied():
  first = host_memory.keep_freed_memory()
  assert first is GLIBC and host_memory.keep_freed_memory() is first
  assert host_memory.applied() is first

"""Reliability tests reuse the engine tests' tiny model, task and training helpers."""

import os
import sys

# As tests/engine: less XLA:CPU optimization halves compile time of the tiny models.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()

RELIABILITY_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(RELIABILITY_DIR))
ENGINE_TEST_DIR = os.path.join(REPO_ROOT, 'tests', 'engine')
BENCH_DIR = os.path.join(REPO_ROOT, 'bench')  # soak_kill.py: the soak's engine, also run by a short test
for path in (REPO_ROOT, ENGINE_TEST_DIR, RELIABILITY_DIR, BENCH_DIR):
  if path not in sys.path:
    sys.path.insert(0, path)

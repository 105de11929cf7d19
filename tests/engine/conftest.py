"""Engine test setup: repo root importable, the tiny SeqIO task registered."""

import os
import sys

# XLA:CPU compile time dominates these tiny-model tests; less backend
# optimization halves it. Only effective if no backend was initialized yet.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_TEST_DIR = os.path.dirname(os.path.abspath(__file__))
for path in (REPO_ROOT, ENGINE_TEST_DIR):
  if path not in sys.path:
    sys.path.insert(0, path)

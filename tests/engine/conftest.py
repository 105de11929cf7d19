"""Engine test setup: repo root importable, the tiny SeqIO task registered."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_TEST_DIR = os.path.dirname(os.path.abspath(__file__))
for path in (REPO_ROOT, ENGINE_TEST_DIR):
  if path not in sys.path:
    sys.path.insert(0, path)

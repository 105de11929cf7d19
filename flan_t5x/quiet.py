"""Log lines every job would print that tell the user nothing (each checked to be noise where dropped).

- orbax, each time a checkpoint is opened to be read: `CheckpointManagerOptions.read_only=True,
  setting save_interval_steps=0.` and `Given directory is read only=...` (flan-t5x opens checkpoints
  read-only on purpose);
- seqio, each time a dataset is packed: `Features not in features_length will be removed during
  packing: {...}`, dropped only when every feature named is a `*_pretokenized` text copy (flan tasks
  keep those for eval; training never needs them). Any other feature is still reported;
- gin, for each search path a missing gin file was looked for: `Path not found: ...` (the job then
  reports the missing file in one line, with the nearest names);
- TensorFlow's C++ start-up lines at its first import (`quiet_tensorflow_start`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys

_READ_ONLY = ('CheckpointManagerOptions.read_only=True, setting save_interval_steps=0',
              'Given directory is read only')
_PACKING = 'Features not in `features_length` will be removed during packing'
_GIN_SEARCH = 'Path not found: '


def is_noise(message: str) -> bool:
  if message.startswith(_READ_ONLY) or message.startswith(_GIN_SEARCH):
    return True
  if message.startswith(_PACKING):
    names = re.findall(r"'([^']+)'", message[len(_PACKING):])
    return bool(names) and all(name.endswith('_pretokenized') for name in names)
  return False


class _DropNoise(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    try:
      return not is_noise(record.getMessage())
    except Exception:  # pylint: disable=broad-except  (a record that cannot be formatted is not ours to drop)
      return True


def drop_known_noise() -> None:
  """Filters those lines out of absl's Python logger (orbax and seqio log through it) and the root
  logger (gin's); idempotent."""
  for logger in (logging.getLogger('absl'), logging.getLogger()):  # gin logs through the root logger
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
      logger.addFilter(_DropNoise())


SHOW_ENV = 'FLAN_SHOW_STARTUP_LOGS'


@contextlib.contextmanager
def native_stderr_silenced():
  """File descriptor 2 (what C++ writes to) at /dev/null inside the block; Python's sys.stderr too."""
  try:
    sys.stderr.flush()
  except (AttributeError, ValueError):
    pass
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class _QuietLoader(importlib.abc.Loader):

  def __init__(self, inner):
    self._inner = inner

  def create_module(self, spec):
    return self._inner.create_module(spec)

  def exec_module(self, module):
    module.__loader__ = self._inner  # what TensorFlow's own lazy loaders expect to find
    with native_stderr_silenced():
      self._inner.exec_module(module)


class _FirstTensorFlowImport(importlib.abc.MetaPathFinder):

  def find_spec(self, name, path=None, target=None):
    if name != 'tensorflow':
      return None
    _uninstall()  # once: the first import only
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def quiet_tensorflow_start() -> None:
  """TensorFlow's first import writes C++ lines to the process's stderr (`WARNING: All log messages before
  absl::InitializeLog() ...`, `cudart_stub.cc ... Could not find cuda drivers` on a CPU machine) before any
  Python logging setting can act; a notebook shows them as red blocks. From here on, the first
  `import tensorflow`, whoever asks for it, runs with file descriptor 2 at /dev/null; everything after the
  import is shown as usual (TensorFlow's real errors arrive as Python exceptions). Idempotent; a no-op once
  TensorFlow is imported, or with FLAN_SHOW_STARTUP_LOGS=1."""
  if 'tensorflow' in sys.modules or os.environ.get(SHOW_ENV) == '1':
    return
  if not any(isinstance(f, _FirstTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _FirstTensorFlowImport())


def _uninstall() -> None:
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _FirstTensorFlowImport)]

"""Log lines every job would print that tell the user nothing (each checked to be noise where dropped).

- orbax, each time a checkpoint is opened to be read: `CheckpointManagerOptions.read_only=True,
  setting save_interval_steps=0.` and `Given directory is read only=...` (flan-t5x opens checkpoints
  read-only on purpose);
- seqio, each time a dataset is packed: `Features not in features_length will be removed during
  packing: {...}`, dropped only when every feature named is a `*_pretokenized` text copy (flan tasks
  keep those for eval; training never needs them). Any other feature is still reported;
- gin, for each search path a missing gin file was looked for: `Path not found: ...` (the job then
  reports the missing file in one line, with the nearest names).
"""

from __future__ import annotations

import logging
import re

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

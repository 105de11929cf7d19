"""Permissions of files made through tempfile (mkstemp: 0600, mkdtemp: 0700), set to what open() /
os.makedirs would have given them under the process's umask, before they are renamed into place."""

from __future__ import annotations

import os


def umask() -> int:
  """The process's umask, read without changing it where Linux shows it (/proc), else set and reset."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def file_mode() -> int:
  return 0o666 & ~umask()


def directory_mode() -> int:
  return 0o777 & ~umask()

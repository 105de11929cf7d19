"""Where flan_tasks finds data and the T5 vocabulary: set once, read lazily when a dataset is built.

Resolution order (no hidden defaults): a value set with `configure(...)` (Python or gin), else the
environment variable, else an error that says which one to set.
"""
import os
from typing import Optional

DATA_DIR_ENV = "FLAN_DATA_DIR"
TFDS_DATA_DIR_ENV = "FLAN_TFDS_DATA_DIR"
VOCAB_PATH_ENV = "FLAN_VOCAB_PATH"
MISSING_DATA_ENV = "FLAN_MISSING_DATA"
MISSING_DATA_POLICIES = ("skip", "error")

_settings = {"data_dir": None, "tfds_data_dir": None, "vocab_path": None, "missing_data": None}


def configure(data_dir: Optional[str] = None,
              tfds_data_dir: Optional[str] = None,
              vocab_path: Optional[str] = None,
              missing_data: Optional[str] = None) -> None:
  """Sets the local data directory, the TFDS data directory, the SentencePiece vocabulary path and
  what a FLAN mixture does with a member dataset that is not available ("skip" it with a warning, the
  default, or raise an "error").

  Only the arguments given are changed. Takes effect for datasets built afterwards, including tasks
  that were registered earlier.
  """
  if missing_data is not None and missing_data not in MISSING_DATA_POLICIES:
    raise ValueError(f"missing_data must be one of {MISSING_DATA_POLICIES}, got {missing_data!r}")
  for key, value in (("data_dir", data_dir), ("tfds_data_dir", tfds_data_dir),
                     ("vocab_path", vocab_path), ("missing_data", missing_data)):
    if value is not None:
      _settings[key] = os.fspath(value)


def reset() -> None:
  """Forgets values set with `configure` (tests use this)."""
  for key in _settings:
    _settings[key] = None


def data_dir() -> Optional[str]:
  """Local data directory holding one folder per dataset (e.g. `samsum/train.json`), or None."""
  return _settings["data_dir"] or os.environ.get(DATA_DIR_ENV) or None


def tfds_data_dir() -> Optional[str]:
  """TFDS data_dir; None means TFDS's own default (~/tensorflow_datasets or $TFDS_DATA_DIR)."""
  return _settings["tfds_data_dir"] or os.environ.get(TFDS_DATA_DIR_ENV) or None


def vocab_path() -> str:
  path = _settings["vocab_path"] or os.environ.get(VOCAB_PATH_ENV)
  if not path:
    raise ValueError(
        "No T5 SentencePiece vocabulary configured: set the environment variable "
        f"{VOCAB_PATH_ENV}=/path/to/spiece.model or call flan_tasks.configure(vocab_path=...) "
        "(gin: flan_tasks.configure.vocab_path = '...').")
  return path


def missing_data_policy() -> str:
  policy = _settings["missing_data"] or os.environ.get(MISSING_DATA_ENV) or "skip"
  if policy not in MISSING_DATA_POLICIES:
    raise ValueError(f"${MISSING_DATA_ENV} must be one of {MISSING_DATA_POLICIES}, got {policy!r}")
  return policy

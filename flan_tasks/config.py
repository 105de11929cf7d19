"""Where flan_tasks finds data and the T5 vocabulary: set once, read lazily when a dataset is built.

Resolution order: a value set with `configure(...)` (Python or gin), else the environment variable,
else the default (the data directory has none: an error says which one to set). The vocabulary's
default is T5X's Flan-T5 vocabulary, so flan tasks match T5X's own model gin files.
"""
import os
from typing import Optional

DATA_DIR_ENV = "FLAN_DATA_DIR"
TFDS_DATA_DIR_ENV = "FLAN_TFDS_DATA_DIR"
VOCAB_PATH_ENV = "FLAN_VOCAB_PATH"
VOCAB_EXTRA_IDS_ENV = "FLAN_VOCAB_EXTRA_IDS"
# T5X's Flan-T5 / T5.1.1 vocabulary (t5x/examples/t5/t5_1_1/base.gin): 32,000 pieces plus the 100
# sentinels already in the file, so it takes no extra ids.
DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
# Any other file (a 32,000-piece spiece.model as shipped with Hugging Face checkpoints) gets T5's
# 100 sentinel ids appended unless told otherwise. Either way the T5 vocabulary has 32,100 ids.
T5_EXTRA_IDS = 100
MISSING_DATA_ENV = "FLAN_MISSING_DATA"
COLLECTION_DIR_ENV = "FLAN_COLLECTION_DIR"
MISSING_DATA_POLICIES = ("skip", "error")

_settings = {"data_dir": None, "tfds_data_dir": None, "vocab_path": None, "vocab_extra_ids": None,
             "missing_data": None, "collection_dir": None}


def configure(data_dir: Optional[str] = None,
              tfds_data_dir: Optional[str] = None,
              vocab_path: Optional[str] = None,
              missing_data: Optional[str] = None,
              vocab_extra_ids: Optional[int] = None,
              collection_dir: Optional[str] = None) -> None:
  """Sets the local data directory, the TFDS data directory, the SentencePiece vocabulary path (and
  its number of extra ids, see `vocab_extra_ids()`), the Flan Collection's directory
  (`flan_tasks.add_flan_collection`) and what a FLAN mixture does with a member dataset that is not available ("skip" it with a warning, the
  default, or raise an "error").

  Only the arguments given are changed. Takes effect for datasets built afterwards, including tasks
  that were registered earlier.
  """
  if missing_data is not None and missing_data not in MISSING_DATA_POLICIES:
    raise ValueError(f"missing_data must be one of {MISSING_DATA_POLICIES}, got {missing_data!r}")
  if vocab_extra_ids is not None:
    _settings["vocab_extra_ids"] = _extra_ids_value(vocab_extra_ids, "vocab_extra_ids")
  for key, value in (("data_dir", data_dir), ("tfds_data_dir", tfds_data_dir),
                     ("vocab_path", vocab_path), ("missing_data", missing_data),
                     ("collection_dir", collection_dir)):
    if value is not None:
      _settings[key] = os.fspath(value)


def reset() -> None:
  """Forgets values set with `configure` (tests use this)."""
  for key in _settings:
    _settings[key] = None


def data_dir() -> Optional[str]:
  """Local data directory holding one folder per dataset (e.g. `samsum/train.json`), or None."""
  return _settings["data_dir"] or os.environ.get(DATA_DIR_ENV) or None


def collection_dir() -> Optional[str]:
  """Directory (or gs:// bucket path) of the Flan Collection's shards, or None."""
  return _settings["collection_dir"] or os.environ.get(COLLECTION_DIR_ENV) or None


def tfds_data_dir() -> Optional[str]:
  """TFDS data_dir; None means TFDS's own default (~/tensorflow_datasets or $TFDS_DATA_DIR)."""
  return _settings["tfds_data_dir"] or os.environ.get(TFDS_DATA_DIR_ENV) or None


def vocab_path() -> str:
  """The T5 SentencePiece model: configure(vocab_path=...), else $FLAN_VOCAB_PATH, else T5X's file."""
  return _settings["vocab_path"] or os.environ.get(VOCAB_PATH_ENV) or DEFAULT_VOCAB_PATH


def vocab_extra_ids() -> int:
  """configure(vocab_extra_ids=...), else $FLAN_VOCAB_EXTRA_IDS, else 0 for T5X's default file
  (its sentinels are in the file) and 100 for any other file."""
  if _settings["vocab_extra_ids"] is not None:
    return _settings["vocab_extra_ids"]
  if os.environ.get(VOCAB_EXTRA_IDS_ENV):
    return _extra_ids_value(os.environ[VOCAB_EXTRA_IDS_ENV], f"${VOCAB_EXTRA_IDS_ENV}")
  return 0 if vocab_path() == DEFAULT_VOCAB_PATH else T5_EXTRA_IDS


def _extra_ids_value(value, name: str) -> int:
  try:
    number = int(value)
  except (TypeError, ValueError):
    number = -1
  if number < 0 or isinstance(value, bool) or (isinstance(value, float) and value != number):
    raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  return number


def missing_data_policy() -> str:
  policy = _settings["missing_data"] or os.environ.get(MISSING_DATA_ENV) or "skip"
  if policy not in MISSING_DATA_POLICIES:
    raise ValueError(f"${MISSING_DATA_ENV} must be one of {MISSING_DATA_POLICIES}, got {policy!r}")
  return policy


def absolute_path(path: Optional[str]) -> Optional[str]:
  """`path` relative to the current directory made absolute; None, `~` and URLs (gs://...) as given.

  The shared gin files pass MODEL_DIR, CHECKPOINT_PATH and the output directories through it, so a
  path typed relative to where the job runs works in both engines (T5X's orbax refuses relative ones).
  """
  if path is None or "://" in str(path):
    return path
  return os.path.abspath(os.path.expanduser(str(path)))

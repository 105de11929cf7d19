"""Vocabularies: a byte vocabulary for the built-in demo tasks, the T5 SentencePiece model for the rest.

The T5 vocabulary of every flan task is one object whose file is resolved when it is used, not when
tasks are registered (at import): `flan_tasks.configure(vocab_path=...)`, $FLAN_VOCAB_PATH, else T5X's
Flan-T5 vocabulary (config.DEFAULT_VOCAB_PATH). It compares equal to
`seqio.SentencePieceVocabulary(<that file>, <extra ids>)`, the vocabulary T5X's model gin files
bind, so T5X's "Model and Task vocabularies do not match" check passes when both name one file.
"""
import functools
from typing import Optional

import seqio

from flan_tasks import config

T5_EXTRA_IDS = config.T5_EXTRA_IDS


@functools.lru_cache(maxsize=None)
def demo_vocabulary() -> seqio.Vocabulary:
  """UTF-8 bytes (vocab size 259): needs no file and no download, so the demo runs anywhere."""
  return seqio.ByteVocabulary()


class VocabularyNotFoundError(FileNotFoundError):
  """The configured SentencePiece model cannot be read; says where the path was set."""


class LazyT5Vocabulary(seqio.SentencePieceVocabulary):
  """seqio.SentencePieceVocabulary whose file and extra ids are read from flan_tasks.config on use.

  Equality, pickling and copying behave as the plain seqio vocabulary of the resolved file: a copy
  or an unpickled one IS a plain `seqio.SentencePieceVocabulary` with the path fixed at that time.
  """

  def __init__(self):
    super().__init__(sentencepiece_model_file="<resolved from flan_tasks.config>")
    self._loaded = None

  # seqio reads these private attributes whenever it loads the model or counts ids; properties make
  # those reads follow flan_tasks.config (a value set after registration takes effect).
  @property
  def _sentencepiece_model_file(self) -> str:
    return config.vocab_path()

  @_sentencepiece_model_file.setter
  def _sentencepiece_model_file(self, value):
    del value  # the parent constructor assigns a placeholder

  @property
  def _extra_ids(self) -> int:
    return config.vocab_extra_ids()

  @_extra_ids.setter
  def _extra_ids(self, value):
    del value

  def resolved(self) -> seqio.SentencePieceVocabulary:
    """The plain seqio vocabulary this one stands for now."""
    return seqio.SentencePieceVocabulary(config.vocab_path(), config.vocab_extra_ids())

  def __getstate__(self):
    return self.resolved().__getstate__()  # what __eq__ compares

  def __reduce__(self):
    return (seqio.SentencePieceVocabulary, (config.vocab_path(), config.vocab_extra_ids()))

  def __repr__(self):
    return (f"flan_tasks T5 vocabulary (SentencePieceVocabulary(file={config.vocab_path()!r}, "
            f"extra_ids={config.vocab_extra_ids()}))")

  def _model_context(self):
    key = (config.vocab_path(), config.vocab_extra_ids())
    if self._model is not None and self._loaded != key:
      self._model = None  # the path changed after the model was loaded (flan_tasks.configure)
    try:
      context = super()._model_context()
    except Exception as e:  # tf.io.gfile raises NotFound, PermissionDenied, FailedPrecondition...
      raise VocabularyNotFoundError(
          f"Cannot read the T5 SentencePiece vocabulary {key[0]!r} ({type(e).__name__}: "
          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}). Point flan_tasks at a "
          f"readable copy: ${config.VOCAB_PATH_ENV}=/path/to/spiece.model, "
          "flan_tasks.configure(vocab_path=...), or in gin VOCAB_PATH = '...' (flan-t5x model "
          "files; it sets both the model's and the tasks' vocabulary). The default is T5X's "
          f"{config.DEFAULT_VOCAB_PATH} (needs Google Cloud Storage access).") from e
    self._loaded = key
    return context


_T5_VOCABULARY = LazyT5Vocabulary()


def t5_vocabulary(sentencepiece_model_file: Optional[str] = None,
                  extra_ids: Optional[int] = None) -> seqio.SentencePieceVocabulary:
  """The T5 vocabulary every flan task uses.

  Given a file (and extra ids) it first sets them, as `configure(vocab_path=..., vocab_extra_ids=...)`:
  flan-t5x's model gin files bind `VOCABULARY = @flan_tasks.t5_vocabulary()` with
  `sentencepiece_model_file = %VOCAB_PATH`, so one macro sets the model's and the tasks' vocabulary.
  None leaves flan_tasks' setting ($FLAN_VOCAB_PATH or T5X's default file).
  """
  if sentencepiece_model_file is not None or extra_ids is not None:
    config.configure(vocab_path=sentencepiece_model_file, vocab_extra_ids=extra_ids)
  return _T5_VOCABULARY

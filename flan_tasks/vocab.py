"""Vocabularies: a byte vocabulary for the built-in demo tasks, the 32k T5 SentencePiece model for the rest."""
import functools

import seqio

from flan_tasks import config

# The T5 SentencePiece model has 32,000 pieces; T5 adds 100 sentinel ids (32,100; models pad to 32,128).
T5_EXTRA_IDS = 100


@functools.lru_cache(maxsize=None)
def demo_vocabulary() -> seqio.Vocabulary:
  """UTF-8 bytes (vocab size 259): needs no file and no download, so the demo runs anywhere."""
  return seqio.ByteVocabulary()


class LazyT5Vocabulary(seqio.SentencePieceVocabulary):
  """The T5 SentencePiece vocabulary whose path is resolved on first use, not at task registration.

  Tasks are registered at import time; the path comes later from `flan_tasks.configure` or
  $FLAN_VOCAB_PATH, so it cannot be fixed in the constructor.
  """

  def __init__(self, extra_ids: int = T5_EXTRA_IDS):
    # The parent stores the path and loads lazily; we override the path accessor below.
    super().__init__(sentencepiece_model_file="<resolved from flan_tasks.config>",
                     extra_ids=extra_ids)
    self._loaded_path = None

  def _model_context(self):
    # A path changed after the model was loaded (flan_tasks.configure) must take effect.
    if self._model is not None and self._loaded_path != config.vocab_path():
      self._model = None
    context = super()._model_context()
    self._loaded_path = config.vocab_path()
    return context

  # seqio reads the private attribute when it loads the model; a property makes that read lazy.
  @property
  def _sentencepiece_model_file(self) -> str:
    return config.vocab_path()

  @_sentencepiece_model_file.setter
  def _sentencepiece_model_file(self, value):
    del value  # the parent constructor assigns a placeholder; the real path is always read from config


@functools.lru_cache(maxsize=None)
def t5_vocabulary() -> seqio.Vocabulary:
  return LazyT5Vocabulary()

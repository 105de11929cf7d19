"""One T5 vocabulary: flan_tasks' equals the plain seqio vocabulary of the file it resolves to."""
import copy
import pathlib
import pickle

import pytest
import seqio

import flan_tasks
from flan_tasks import config
from flan_tasks import vocab

SHARED_SPIECE = pathlib.Path(__file__).resolve().parents[2] / "shared/checkpoints/t5-spiece/spiece.model"


@pytest.fixture(autouse=True)
def clean_config(monkeypatch):
  monkeypatch.delenv(config.VOCAB_PATH_ENV, raising=False)
  monkeypatch.delenv(config.VOCAB_EXTRA_IDS_ENV, raising=False)
  config.reset()
  yield
  config.reset()


def test_default_is_t5x_flan_t5_vocabulary_and_equals_t5x_binding():
  # t5x/examples/t5/t5_1_1/base.gin: seqio.SentencePieceVocabulary(<this file>), extra_ids 0.
  t5x_vocab = seqio.SentencePieceVocabulary(
      "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model")
  task_vocab = seqio.get_mixture_or_task("samsum_zs").output_features["targets"].vocabulary
  assert task_vocab is flan_tasks.t5_vocabulary()
  assert isinstance(task_vocab, seqio.SentencePieceVocabulary)
  assert task_vocab == t5x_vocab and t5x_vocab == task_vocab  # both sides of T5X's `!=` check
  assert task_vocab != seqio.SentencePieceVocabulary(t5x_vocab.sentencepiece_model_file, extra_ids=100)
  assert task_vocab != seqio.ByteVocabulary()


def test_configured_file_equals_seqio_vocabulary_of_it_and_encodes_the_same(tiny_spm):
  task_vocab = flan_tasks.t5_vocabulary()
  flan_tasks.configure(vocab_path=tiny_spm)
  plain = seqio.SentencePieceVocabulary(tiny_spm, extra_ids=100)  # another file: 100 extra ids
  assert task_vocab == plain and plain == task_vocab
  assert task_vocab != seqio.SentencePieceVocabulary(tiny_spm)
  text = "the customer asked about a refund"
  assert list(task_vocab.encode(text)) == list(plain.encode(text))
  assert task_vocab.vocab_size == plain.vocab_size
  flan_tasks.configure(vocab_extra_ids=0)
  assert task_vocab == seqio.SentencePieceVocabulary(tiny_spm)
  # Copies and pickles (gin deep-copies arguments; multi-process runs pickle) are plain seqio
  # vocabularies of the file resolved at that time.
  for other in (copy.deepcopy(task_vocab), pickle.loads(pickle.dumps(task_vocab))):
    assert type(other) is seqio.SentencePieceVocabulary and other == task_vocab


def test_gin_binding_sets_the_tasks_vocabulary_too(tiny_spm):
  # What flan-t5x's model files do: VOCABULARY = @flan_tasks.t5_vocabulary() with VOCAB_PATH.
  model_vocab = vocab.t5_vocabulary(sentencepiece_model_file=tiny_spm, extra_ids=7)
  task_vocab = seqio.get_mixture_or_task("samsum_zs").output_features["inputs"].vocabulary
  assert config.vocab_path() == tiny_spm and config.vocab_extra_ids() == 7
  assert model_vocab == task_vocab == seqio.SentencePieceVocabulary(tiny_spm, extra_ids=7)


def test_environment_variables(monkeypatch, tiny_spm):
  monkeypatch.setenv(config.VOCAB_PATH_ENV, tiny_spm)
  assert flan_tasks.t5_vocabulary() == seqio.SentencePieceVocabulary(tiny_spm, extra_ids=100)
  monkeypatch.setenv(config.VOCAB_EXTRA_IDS_ENV, "0")
  assert flan_tasks.t5_vocabulary() == seqio.SentencePieceVocabulary(tiny_spm)
  monkeypatch.setenv(config.VOCAB_EXTRA_IDS_ENV, "many")
  with pytest.raises(ValueError, match="FLAN_VOCAB_EXTRA_IDS must be a non-negative integer"):
    config.vocab_extra_ids()


@pytest.mark.parametrize("path", ["/nonexistent/spiece.model",
                                  "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"])
def test_unreadable_file_names_the_path_and_how_to_set_it(path):
  if path.startswith("/"):
    flan_tasks.configure(vocab_path=path)  # else the default: unreadable without network access
  try:
    flan_tasks.t5_vocabulary().encode("hello")
  except vocab.VocabularyNotFoundError as error:
    message = str(error)
  else:
    assert path.startswith("gs://")
    pytest.skip("this machine can read gs://t5-data")
  assert path in message and "FLAN_VOCAB_PATH" in message and "configure(vocab_path=" in message


@pytest.mark.skipif(not SHARED_SPIECE.exists(), reason="no ../shared/checkpoints/t5-spiece")
def test_shared_spiece_model_equals_seqio_vocabulary_with_100_extra_ids():
  flan_tasks.configure(vocab_path=str(SHARED_SPIECE))
  plain = seqio.SentencePieceVocabulary(str(SHARED_SPIECE), extra_ids=100)
  assert flan_tasks.t5_vocabulary() == plain and flan_tasks.t5_vocabulary().vocab_size == 32_100
  assert list(flan_tasks.t5_vocabulary().encode("Summarize: hi")) == list(plain.encode("Summarize: hi"))

"""Train and eval check the model's vocabularies against the task's, as T5X does."""
import gin
import pytest
import seqio

import flan_tasks
from flan_t5x import eval as eval_script
from flan_t5x import gin_utils
from flan_t5x import models
from flan_t5x import network
from flan_t5x import optimizers
from flan_t5x import task_vocab
from flan_t5x import training as train_script
from flan_tasks import config

import helpers


@pytest.fixture(autouse=True)
def clean(monkeypatch):
  monkeypatch.delenv(config.VOCAB_PATH_ENV, raising=False)
  monkeypatch.delenv(config.VOCAB_EXTRA_IDS_ENV, raising=False)
  gin.clear_config(clear_constants=True)
  config.reset()
  yield
  gin.clear_config(clear_constants=True)
  config.reset()


def _model_from_gin(bindings):
  gin_utils.parse_gin(['gin/models/t5_1_1_tiny.gin'], ['DROPOUT_RATE = 0.0'] + bindings, finalize=False)
  return gin.query_parameter('%MODEL').scoped_configurable_fn()


def test_model_file_vocab_path_sets_model_and_task_vocabulary(tiny_spm, flan_data_dir):
  config.reset()  # flan_data_dir configured the vocabulary: here VOCAB_PATH alone must set it
  config.configure(data_dir=str(flan_data_dir))
  model = _model_from_gin([f"VOCAB_PATH = '{tiny_spm}'"])
  expected = seqio.SentencePieceVocabulary(tiny_spm, extra_ids=100)
  assert model.input_vocabulary == expected and model.output_vocabulary == expected
  assert seqio.get_mixture_or_task('flan_mix').output_features['targets'].vocabulary == expected
  task_vocab.check_vocabularies(model, 'flan_mix')
  task_vocab.check_vocabularies(model, 'flan_heldout')


def test_model_file_default_is_t5x_vocabulary():
  model = _model_from_gin([])
  assert model.output_vocabulary == seqio.SentencePieceVocabulary(config.DEFAULT_VOCAB_PATH)
  assert seqio.get_mixture_or_task('samsum_zs').output_features['targets'].vocabulary == model.output_vocabulary


def test_mismatch_is_refused_by_train_and_eval_with_the_settings_named(tmp_path):
  task_vocab.check_vocabularies(helpers.tiny_model(), helpers.dataset_cfg().mixture_or_task_name)
  t5_model = models.EncoderDecoderModel(
      network.Transformer(helpers.tiny_config()), input_vocabulary=flan_tasks.t5_vocabulary(),
      output_vocabulary=flan_tasks.t5_vocabulary(), optimizer_def=optimizers.Adafactor())
  with pytest.raises(ValueError, match=r"do not match.*'engine_test_copy'.*VOCAB_PATH"):
    train_script.train(model=t5_model, model_dir=str(tmp_path / 'train'),
                       train_dataset_cfg=helpers.dataset_cfg(), total_steps=1)
  assert not (tmp_path / 'train' / 'checkpoint_1').exists()
  with pytest.raises(ValueError, match=r"do not match.*'demo_heldout'.*seqio.ByteVocabulary"):
    eval_script.evaluate(model=t5_model, checkpoint_path=str(tmp_path / 'no_checkpoint'),
                         output_dir=str(tmp_path / 'eval'), mixture_or_task_name='demo_heldout')
  assert not (tmp_path / 'eval').exists()


def test_missing_vocabulary_file_stops_train_and_eval_before_any_work(tmp_path):
  missing = str(tmp_path / 'nowhere' / 'spiece.model')
  config.configure(vocab_path=missing)
  t5_model = models.EncoderDecoderModel(
      network.Transformer(helpers.tiny_config(vocab_size=32128)), input_vocabulary=flan_tasks.t5_vocabulary(),
      output_vocabulary=flan_tasks.t5_vocabulary(), optimizer_def=optimizers.Adafactor())
  task_vocab.check_vocabularies(t5_model, 'samsum_zs', features=())  # nothing read: nothing checked
  cfg = helpers.dataset_cfg(task='samsum_zs')
  with pytest.raises(FileNotFoundError, match=rf"task 'samsum_zs' feature 'inputs'.*{missing}.*FLAN_VOCAB_PATH"):
    train_script.train(model=t5_model, model_dir=str(tmp_path / 'train'), train_dataset_cfg=cfg, total_steps=1)
  assert not (tmp_path / 'train').exists()
  with pytest.raises(FileNotFoundError, match=missing):
    eval_script.evaluate(model=t5_model, checkpoint_path=str(tmp_path / 'no_checkpoint'),
                         output_dir=str(tmp_path / 'eval'), mixture_or_task_name='samsum_zs')
  assert not (tmp_path / 'eval').exists()

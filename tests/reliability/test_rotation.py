"""eval and infer of a MODEL_DIR whose trainer deletes old checkpoints (keep-N) while they read one: the
checkpoint chosen and then deleted is chosen again (eval) or named as deleted (infer), never called damaged.

The deletion is injected at the moment between choosing the checkpoint and reading it, where a
trainer's rotation hits a reader."""

import shutil

import jax
import pytest

from flan_t5x import batch_inference
from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import partitioning

import faults
import helpers


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  directory = tmp_path_factory.mktemp('trained') / 'run'
  faults.train(directory, 2)  # checkpoint_1 and checkpoint_2
  return directory


@pytest.fixture
def model_dir(trained, tmp_path):
  return shutil.copytree(trained, tmp_path / 'run')


def _delete_newest_once(monkeypatch, model_dir):
  """The trainer's keep-N deletes checkpoint_2 after the reader chose it, before it reads it."""
  real = inference.model_for_checkpoint
  deleted = []

  def choose_then_lose(model, path):
    if not deleted and path.endswith('checkpoint_2'):
      shutil.rmtree(model_dir / 'checkpoint_2')
      deleted.append(path)
    return real(model, path)
  monkeypatch.setattr(inference, 'model_for_checkpoint', choose_then_lose)
  return deleted


def test_eval_of_a_rotating_model_dir_reads_the_newest_again(model_dir, tmp_path, monkeypatch, capsys):
  deleted = _delete_newest_once(monkeypatch, model_dir)
  results = evaluation.evaluate_checkpoint(
      model=helpers.tiny_model(), checkpoint_path=str(model_dir), output_dir=str(tmp_path / 'eval'),
      mixture_or_task_name='engine_test_copy', task_feature_lengths=helpers.FEATURE_LENGTHS, batch_size=4,
      max_examples=4, partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]), rank_classification=False)
  assert deleted and 'engine_test_copy' in results
  out = capsys.readouterr().out
  assert 'checkpoint_2 was deleted while it was read' in out and '(step 1)' in out


def test_eval_of_a_deleted_checkpoint_says_so_not_damage(model_dir, tmp_path, monkeypatch):
  _delete_newest_once(monkeypatch, model_dir)
  with pytest.raises(inference.CheckpointGoneError, match='checkpoint_2 was deleted while it was read'):
    evaluation.evaluate_checkpoint(
        model=helpers.tiny_model(), checkpoint_path=str(model_dir / 'checkpoint_2'), output_dir=str(tmp_path / 'e'),
        mixture_or_task_name='engine_test_copy', task_feature_lengths=helpers.FEATURE_LENGTHS, batch_size=4,
        max_examples=4, partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]))


def test_infer_names_a_checkpoint_deleted_under_it_and_leaves_nothing(model_dir, tmp_path, monkeypatch):
  real = inference.load_params

  def rotated(model, partitioner, path):
    shutil.rmtree(path)  # keep-N, after the job chose and fingerprinted it
    return real(model, partitioner, path)
  monkeypatch.setattr(inference, 'load_params', rotated)
  inputs = tmp_path / 'in.jsonl'
  inputs.write_text('{"inputs": "copy: a b"}\n')
  with pytest.raises(inference.CheckpointGoneError, match='checkpoint_2 was deleted while it was read'):
    batch_inference.infer(model=helpers.tiny_model(), checkpoint_path=str(model_dir), output_dir=str(tmp_path / 'out'),
                          input_path=str(inputs), chunk_size=2, batch_size=2, input_length=32, max_decode_length=4,
                          partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]))
  assert not (tmp_path / 'out').exists()

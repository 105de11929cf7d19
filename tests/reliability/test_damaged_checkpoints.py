"""A truncated, deleted or corrupted file in the newest checkpoint is found on restore and named;
training falls back to the previous checkpoint only with `fallback_to_previous`; eval/infer refuse."""

import os
import shutil

import jax
import pytest

from flan_t5x import checkpoint_integrity
from flan_t5x import checkpoints
from flan_t5x import inference
from flan_t5x import partitioning

import faults
import helpers
import soak_kill  # bench/soak_kill.py (the conftest puts bench/ on the path)


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


DAMAGE = {'truncated': _truncate, 'deleted': os.remove, 'corrupted': soak_kill.flip_byte}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('trained') / 'run'
  faults.train(model_dir, 3)
  assert faults.steps_in(model_dir) == [1, 2, 3]
  return model_dir


def _damaged_copy(trained, tmp_path, kind):
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  victim = faults.largest_file(model_dir / 'checkpoint_3' / 'state')
  DAMAGE[kind](victim)
  return model_dir, os.path.relpath(victim, model_dir / 'checkpoint_3')


@pytest.mark.parametrize('kind', sorted(DAMAGE))
def test_damage_stops_the_restart_and_names_the_file(trained, tmp_path, kind):
  model_dir, victim = _damaged_copy(trained, tmp_path, kind)
  with pytest.raises(checkpoint_integrity.DamagedCheckpointError) as caught:
    faults.train(model_dir, 4)
  message = str(caught.value)
  assert str(model_dir / 'checkpoint_3') in message and victim in message
  assert 'fallback_to_previous' in message
  assert faults.steps_in(model_dir) == [1, 2, 3]  # nothing moved, nothing trained


def test_fallback_moves_the_damaged_checkpoint_aside_and_resumes_from_the_previous(trained, tmp_path, capsys):
  model_dir, victim = _damaged_copy(trained, tmp_path, 'corrupted')
  step, _ = faults.train(model_dir, 4, fallback_to_previous=True)
  out = capsys.readouterr().out
  assert step == 4
  assert 'WARNING: Damaged checkpoint' in out and victim in out
  assert f'resumed from {model_dir} at step 2' in out
  assert (model_dir / 'damaged' / 'checkpoint_3' / victim).exists()
  assert faults.steps_in(model_dir) == [1, 2, 3, 4]
  for step in (3, 4):
    checkpoint_integrity.verify(str(model_dir / f'checkpoint_{step}'))


def test_every_complete_save_has_a_manifest_covering_its_files(trained):
  for step in (1, 2, 3):
    step_dir = str(trained / f'checkpoint_{step}')
    assert checkpoint_integrity.has_manifest(step_dir)
    assert checkpoint_integrity.problems(step_dir) == []


@pytest.mark.parametrize('kind', sorted(DAMAGE))
def test_eval_and_infer_loading_fails_with_path_and_reason(trained, tmp_path, kind):
  model_dir, victim = _damaged_copy(trained, tmp_path, kind)
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  for path in (model_dir, model_dir / 'checkpoint_3'):  # a MODEL_DIR (its latest) or one checkpoint
    with pytest.raises(checkpoint_integrity.DamagedCheckpointError, match=victim):
      inference.load_params(helpers.tiny_model(), partitioner, str(path))
  with pytest.raises(checkpoint_integrity.DamagedCheckpointError, match='checkpoint_3'):
    checkpoints.read_params(str(model_dir))  # numpy parameters, as convert/compare read them
  params, step = checkpoints.read_params(str(model_dir / 'checkpoint_2'))
  assert step == 2 and params


def test_damage_without_a_manifest_is_still_reported_with_the_path(trained, tmp_path):
  """Checkpoints saved before manifests existed: orbax's own read errors are reported as damage."""
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  step_dir = model_dir / 'checkpoint_3'
  os.remove(step_dir / checkpoint_integrity.MANIFEST)
  os.remove(step_dir / 'state' / '_METADATA')
  with pytest.raises(checkpoint_integrity.DamagedCheckpointError, match=f'{step_dir}: orbax could not'):
    faults.train(model_dir, 4)


def test_a_checkpoint_of_another_model_size_is_refused_before_training(trained, tmp_path):
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  with pytest.raises(ValueError, match=r'another size or structure .*shape .* in the checkpoint.*emb_dim.*new MODEL_DIR'):
    faults.train(model_dir, 4, model=helpers.tiny_model(emb_dim=64))
  assert faults.steps_in(model_dir) == [1, 2, 3]


@pytest.mark.parametrize('kind', ['corrupted', 'empty'])
def test_a_damaged_or_empty_newest_checkpoint_is_not_a_finished_run(trained, tmp_path, capsys, kind):
  """TRAIN_STEPS at the newest checkpoint's step: 'nothing to train' only once that checkpoint is
  verified; a damaged one is named (and resumable past with fallback_to_previous), never finished."""
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  if kind == 'corrupted':
    soak_kill.flip_byte(faults.largest_file(model_dir / 'checkpoint_3' / 'state'))
    total_steps = 3
  else:
    (model_dir / 'checkpoint_4').mkdir()
    total_steps = 4
  with pytest.raises(checkpoint_integrity.DamagedCheckpointError) as caught:
    faults.train(model_dir, total_steps)
  assert str(model_dir / f'checkpoint_{total_steps}') in str(caught.value)
  assert 'nothing to train' not in capsys.readouterr().out


def test_a_verified_finished_run_is_left_as_it_is(trained, tmp_path, capsys):
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  step, history = faults.train(model_dir, 3)
  assert (step, history) == (3, []) and 'nothing to train' in capsys.readouterr().out
  assert faults.steps_in(model_dir) == [1, 2, 3]


def test_fallback_with_every_checkpoint_damaged_stops_and_lists_what_it_moved(trained, tmp_path):
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  for step in (1, 2, 3):
    soak_kill.flip_byte(faults.largest_file(model_dir / f'checkpoint_{step}' / 'state'))
  with pytest.raises(checkpoint_integrity.NoIntactCheckpointError) as caught:
    faults.train(model_dir, 5, fallback_to_previous=True)
  for step in (1, 2, 3):
    assert f"{model_dir / f'checkpoint_{step}'} -> {model_dir / 'damaged' / f'checkpoint_{step}'}" in str(caught.value)
  assert faults.steps_in(model_dir) == []  # moved (proved damaged), and nothing trained from scratch


def test_another_optimizer_is_a_configuration_change_never_damage(trained, tmp_path):
  from flan_t5x import model_mismatch  # pylint: disable=g-import-not-at-top
  from flan_t5x import optimizers  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  for fallback in (False, True):
    with pytest.raises(model_mismatch.OptimizerMismatchError) as caught:
      faults.train(model_dir, 5, fallback_to_previous=fallback, model=helpers.tiny_model(optimizer=optimizers.AdamW()))
    message = str(caught.value)
    assert "another optimizer than this run's AdamW" in message and 'not damage: nothing was moved' in message
    assert '--gin.INITIAL_CHECKPOINT_PATH=' in message
    assert faults.steps_in(model_dir) == [1, 2, 3] and not (model_dir / 'damaged').exists()


def test_eval_of_a_model_dir_whose_newest_directory_is_empty_uses_the_newest_complete_one(trained, tmp_path,
                                                                                            capsys):
  from flan_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  (model_dir / 'checkpoint_4').mkdir()  # a save in progress, or emptied by hand
  fingerprint = inference.checkpoint_fingerprint(str(model_dir))
  assert fingerprint['resolved'] == str(model_dir / 'checkpoint_3') and fingerprint['step'] == 3
  assert f'{model_dir}: passing over checkpoint_4 (no complete checkpoint in it); using checkpoint_3' in \
      capsys.readouterr().out
  params, step = checkpoint_import.restore_params(str(model_dir), None, helpers.tiny_model().config)
  assert step == 3 and params
  for step_dir in ('checkpoint_1', 'checkpoint_2', 'checkpoint_3'):
    shutil.rmtree(model_dir / step_dir)
  with pytest.raises(FileNotFoundError, match='no checkpoint found'):
    inference.checkpoint_fingerprint(str(model_dir))

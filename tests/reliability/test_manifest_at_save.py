"""Every complete checkpoint has its checksum manifest the moment it is complete (written inside
the save, before orbax's rename); a checkpoint without one gets one at restore, and says so; a
non-finite error after a restore names that checkpoint and calls it good only when it was verified."""

import os
import shutil
import signal
import subprocess

import pytest

from flan_t5x import checkpoint_integrity

import faults
from test_nonfinite import AllPaddingBatchTrainer, POISONED_STEP


def test_a_kill_right_after_a_save_leaves_that_checkpoint_with_its_manifest(tmp_path):
  model_dir = tmp_path / 'run'
  child = subprocess.run(faults.child_dies_after_save_command(model_dir), env=faults.child_env(),
                         capture_output=True, text=True, timeout=600)
  assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
  steps = faults.steps_in(model_dir)
  assert steps[-1] >= faults.DiesAfterSaveTrainer.DIES_AT - 1, steps
  for step in steps:  # the newest included: it used to get its manifest only at the next save
    step_dir = str(model_dir / f'checkpoint_{step}')
    assert checkpoint_integrity.has_manifest(step_dir), step
    assert checkpoint_integrity.problems(step_dir) == []


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('trained') / 'run'
  faults.train(model_dir, 2)
  return model_dir


def _without_manifest(trained, tmp_path):
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  os.remove(model_dir / 'checkpoint_2' / checkpoint_integrity.MANIFEST)
  return model_dir


def test_a_restore_writes_the_missing_manifest_and_says_so(trained, tmp_path, capsys):
  model_dir = _without_manifest(trained, tmp_path)
  faults.train(model_dir, 3)
  out = capsys.readouterr().out
  assert f'{model_dir}/checkpoint_2 had no checksum manifest: unverifiable. Orbax read it, its shapes matched ' \
         'and every tensor was finite; wrote a manifest that records it as unverified.' in out
  step_dir = str(model_dir / 'checkpoint_2')
  assert checkpoint_integrity.has_manifest(step_dir) and not checkpoint_integrity.verified_at_save(step_dir)
  manifest = (model_dir / 'checkpoint_2' / checkpoint_integrity.MANIFEST).read_text()
  assert 'could not be compared with checksums from its save' in manifest


@pytest.mark.slow
def test_a_manifest_written_at_a_restore_never_makes_the_checkpoint_good(trained, tmp_path):
  """Restored once without a manifest (which wrote one that says so), then a second start: the
  checkpoint is still unverified, so a non-finite loss after it does not call it good."""
  model_dir = _without_manifest(trained, tmp_path)
  faults.train(model_dir, 2)
  with pytest.raises(FloatingPointError) as caught:
    faults.train(model_dir, 2 + POISONED_STEP + 1, trainer_cls=AllPaddingBatchTrainer, period=100)
  message = str(caught.value)
  assert f'resumed from {model_dir}/checkpoint_2 (it had no checksum manifest' in message
  assert 'matched their checksums' not in message and 'good' not in message


def test_a_checkpoint_without_manifest_and_with_a_non_finite_tensor_is_damaged(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import helpers  # pylint: disable=g-import-not-at-top
  from flan_t5x import checkpoints  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'run'
  trainer = helpers.make_trainer()
  state = trainer.init_state()
  params = jax.tree.map(lambda x: x, state.params)
  params['encoder']['encoder_norm']['scale'] = jnp.full_like(params['encoder']['encoder_norm']['scale'], jnp.nan)
  checkpointer = checkpoints.Checkpointer(str(model_dir), checkpoints.SaveCheckpointConfig(period=1),
                                          trainer.abstract_state)
  checkpointer.save(state.replace(params=params, step=jnp.asarray(1, jnp.int32)), checkpoints.RunState(seed=0))
  checkpointer.close()
  os.remove(model_dir / 'checkpoint_1' / checkpoint_integrity.MANIFEST)
  with pytest.raises(checkpoint_integrity.DamagedCheckpointError, match=r'no checksum manifest and .*encoder_norm'
                     r'.*scale holds non-finite values'):
    faults.train(model_dir, 3)
  assert not checkpoint_integrity.has_manifest(str(model_dir / 'checkpoint_1'))  # nothing certified


@pytest.mark.parametrize('verified', [True, False])
def test_non_finite_after_a_restore_names_the_checkpoint_and_its_verification(trained, tmp_path, verified):
  model_dir = _without_manifest(trained, tmp_path) if not verified else tmp_path / 'run'
  if verified:
    shutil.copytree(trained, model_dir)
  with pytest.raises(FloatingPointError) as caught:
    faults.train(model_dir, 2 + POISONED_STEP + 1, trainer_cls=AllPaddingBatchTrainer, period=100)
  message = str(caught.value)
  assert f'at or before step {2 + POISONED_STEP}' in message
  if verified:
    assert f'resumed from {model_dir}/checkpoint_2 (its files matched their checksums)' in message
    assert f'The last good checkpoint (step 2) in {model_dir} is kept.' in message
  else:
    assert f'resumed from {model_dir}/checkpoint_2 (it had no checksum manifest' in message
    assert 'good' not in message and 'was not verified' in message


def test_non_finite_before_any_checkpoint_says_none_was_saved(tmp_path):
  class PoisonedFirstStep(AllPaddingBatchTrainer):
    calls = POISONED_STEP - 1
  with pytest.raises(FloatingPointError, match=r'at or before step 1; .*\. No checkpoint was saved\.$'):
    faults.train(tmp_path / 'run', 3, trainer_cls=PoisonedFirstStep)

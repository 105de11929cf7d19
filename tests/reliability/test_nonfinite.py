"""A non-finite loss stops training without saving that state and names the step and the last good
checkpoint; with Trainer.skip_nonfinite_grads the step is skipped (params kept) and counted."""

import os

import jax
import numpy as np
import pytest

from flan_t5x import checkpoints
from flan_t5x import summaries
from flan_t5x import trainer as trainer_lib

import faults

POISONED_STEP = 3


class AllPaddingBatchTrainer(trainer_lib.Trainer):
  """Step POISONED_STEP gets a batch with no target token to learn from (every loss weight 0), as
  a batch of padding rows would: the per-token loss is 0/0 = NaN and so is every gradient."""

  calls = 0

  def train_step(self, state, local_batch):
    self.calls += 1
    if self.calls == POISONED_STEP:
      local_batch = dict(local_batch, decoder_loss_weights=np.zeros_like(local_batch['decoder_loss_weights']))
    return super().train_step(state, local_batch)


def test_non_finite_loss_stops_without_saving_and_names_step_and_last_good_checkpoint(tmp_path):
  model_dir = tmp_path / 'run'
  with pytest.raises(FloatingPointError) as caught:
    faults.train(model_dir, 5, trainer_cls=AllPaddingBatchTrainer)
  assert str(caught.value) == (
      f'Non-finite loss or parameters at or before step {POISONED_STEP}; stopping without saving that state. '
      f'The last good checkpoint (step {POISONED_STEP - 1}) in {model_dir} is kept.')
  assert faults.steps_in(model_dir) == [1, 2]


def test_guard_skips_the_step_counts_it_and_training_goes_on(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  step, history = faults.train(model_dir, 5, trainer_cls=AllPaddingBatchTrainer, skip_nonfinite_grads=True)
  assert step == 5
  assert f'step {POISONED_STEP}: skipped 1 step(s) with a non-finite gradient norm' in capsys.readouterr().out
  skipped = summaries.read_scalars(os.path.join(model_dir, 'train'), 'skipped_steps')
  assert skipped == {s: float(s == POISONED_STEP) for s in range(1, 6)}
  assert all(np.isfinite(h['loss']) for h in history)
  before, _ = checkpoints.read_params(str(model_dir / f'checkpoint_{POISONED_STEP - 1}'))
  after, _ = checkpoints.read_params(str(model_dir / f'checkpoint_{POISONED_STEP}'))
  final, _ = checkpoints.read_params(str(model_dir / 'checkpoint_5'))
  jax.tree.map(np.testing.assert_array_equal, before, after)  # the skipped step changed nothing
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(final)))

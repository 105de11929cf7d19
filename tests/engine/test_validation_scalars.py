"""Validation scalars are per-batch / per-token values like train's, whatever EVAL_STEPS is."""
import os

import numpy as np
import pytest

from flan_t5x import actions
from flan_t5x import summaries

import helpers


def _scalars(model_dir, name, tag):
  return summaries.read_scalars(os.path.join(str(model_dir), name), tag)


@pytest.mark.slow
def test_validation_loss_is_a_per_batch_mean_comparable_to_train_loss(tmp_path):
  # eval_steps=2 (helpers.run_training): sums over the batches would be twice the per-batch values.
  helpers.run_training(tmp_path, 2, eval_period=2, period=2)
  loss = _scalars(tmp_path, 'validation', 'loss')[2]
  per_token = _scalars(tmp_path, 'validation', 'cross_ent_loss_per_token')[2]
  z_loss = _scalars(tmp_path, 'validation', 'z_loss')[2]
  num_tokens = _scalars(tmp_path, 'validation', 'num_tokens')[2]
  # The model normalizes the loss by the real target tokens: one batch's loss ~ its per-token cross entropy.
  np.testing.assert_allclose(loss - z_loss, per_token, rtol=0.05)
  train_num_tokens = _scalars(tmp_path, 'train', 'num_tokens')[2]
  assert 0 < num_tokens <= 8 * helpers.FEATURE_LENGTHS['targets'] and num_tokens < 1.5 * train_num_tokens
  assert 0 < z_loss < 0.05 * loss


def test_per_batch_summary_divides_sums_by_batches():
  sums = {'loss': 6.0, 'z_loss': 0.3, 'cross_ent_sum': 120.0, 'correct_tokens': 30.0, 'num_tokens': 60.0}
  summary = actions.per_batch_summary(sums, 3)
  assert summary == pytest.approx({'loss': 2.0, 'z_loss': 0.1, 'num_tokens': 20.0, 'cross_ent_loss_per_token': 2.0,
                     'accuracy': 0.5})

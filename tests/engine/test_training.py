"""Training loop: exact resume, checkpoint safety, initial checkpoints, NaN stop, microbatches, learning."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import actions
from flan_t5x import checkpoints
from flan_t5x import data
from flan_t5x import network
from flan_t5x import schedules
from flan_t5x import training as train_lib

import helpers


def _restore(model_dir, trainer=None):
  trainer = trainer or helpers.make_trainer()
  checkpointer = checkpoints.Checkpointer(str(model_dir), checkpoints.SaveCheckpointConfig(period=1),
                                          trainer.abstract_state)
  try:
    return checkpointer.latest_step(), checkpointer.restore_latest()
  finally:
    checkpointer.close()


def _initial_state(model_dir, initial_checkpoint_path, trainer=None):
  """The state train() starts from in an empty MODEL_DIR with INITIAL_CHECKPOINT_PATH."""
  trainer = trainer or helpers.make_trainer()
  checkpointer = checkpoints.Checkpointer(str(model_dir), checkpoints.SaveCheckpointConfig(period=1),
                                          trainer.abstract_state)
  try:
    restore_or_init = train_lib._restore_or_init  # pylint: disable=protected-access
    return restore_or_init(trainer, checkpointer, checkpoints.RestoreCheckpointConfig(path=initial_checkpoint_path),
                           0)[0]
  finally:
    checkpointer.close()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('uninterrupted')
  step, history = helpers.run_training(model_dir, 3, keep=2)
  return model_dir, step, history


@pytest.mark.slow
def test_resume_continues_exactly_like_uninterrupted_run(uninterrupted, tmp_path):
  full_dir, full_step, full_history = uninterrupted
  first_step, first_history = helpers.run_training(tmp_path, 1)
  # A new Trainer/Checkpointer, as after a restart, restores step, optimizer state and data position.
  second_step, second_history = helpers.run_training(tmp_path, 3)
  assert (first_step, second_step, full_step) == (1, 3, 3)
  resumed = [h['loss'] for h in first_history + second_history]
  np.testing.assert_allclose(resumed, [h['loss'] for h in full_history], rtol=1e-6, atol=1e-7)
  (_, full), (_, resumed_run) = _restore(full_dir), _restore(tmp_path)
  assert full.run_state == resumed_run.run_state and resumed_run.run_state.batches_consumed == 3
  assert full.input_state and set(full.input_state) == set(resumed_run.input_state)  # the input position
  for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed_run.state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_keep_n_and_interrupted_save_is_never_visible(uninterrupted):
  model_dir, _, _ = uninterrupted
  assert sorted(p for p in os.listdir(model_dir) if p.startswith('checkpoint_')) == ['checkpoint_2', 'checkpoint_3']
  # What a save killed mid-write leaves behind: an orbax temporary directory.
  partial = model_dir / 'checkpoint_4.orbax-checkpoint-tmp-1234'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / 'garbage').write_text('half written')
  latest, restored = _restore(model_dir)
  assert latest == 3 and int(restored.state.step) == 3 and restored.run_state.batches_consumed == 3
  assert (model_dir / 'config.gin').exists() is False  # written by the CLI only, see test_gin


def test_initial_checkpoint_restores_params_only(uninterrupted, tmp_path):
  source_dir, _, _ = uninterrupted
  restored = _initial_state(tmp_path, str(source_dir))
  assert int(restored.step) == 3  # TRAIN_STEPS counts the initial checkpoint's steps, as T5X
  source = _restore(source_dir)[1].state
  for a, b in zip(jax.tree.leaves(source.params), jax.tree.leaves(restored.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  fresh_opt = helpers.make_trainer().init_state().opt_state
  for a, b in zip(jax.tree.leaves(fresh_opt), jax.tree.leaves(restored.opt_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match='No checkpoint found'):
    checkpoints.resolve_state_dir(str(tmp_path / 'missing'))


def test_non_finite_update_stops_and_keeps_last_good_checkpoint(tmp_path):
  nan_from_step_two = lambda step: jnp.where(step >= 1, jnp.nan, 0.01)
  with pytest.raises(FloatingPointError, match='step 2'):
    helpers.run_training(tmp_path, 5, learning_rate_fn=nan_from_step_two)
  latest, restored = _restore(tmp_path)
  state = restored.state
  assert latest == 1 and int(state.step) == 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


@pytest.mark.slow
def test_microbatched_step_equals_full_batch_step():
  model = helpers.tiny_model()
  cfg = helpers.dataset_cfg(batch_size=8)
  batch = next(data.InputIterator(data.get_dataset(cfg, model.feature_converter(True), seed=0, num_epochs=1)))
  results = []
  for num_microbatches in (None, 2):
    trainer = helpers.make_trainer(model=model, num_microbatches=num_microbatches)
    state, metrics = trainer.train_step(trainer.init_state(), batch)
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  (metrics_a, params_a), (metrics_b, params_b) = results
  for key in ('loss', 'cross_ent_sum', 'num_tokens', 'correct_tokens'):
    np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match='num_microbatches=3'):
    helpers.make_trainer(model=model, num_microbatches=3)


@pytest.mark.slow
def test_tiny_model_loss_falls_by_half(tmp_path):
  """On flan_tasks' demo_mix when available (the `make demo` setting), else the engine test task."""
  if importlib.util.find_spec('flan_tasks') is not None:
    import flan_tasks  # noqa: F401  registers demo_mix
    task, lengths = 'demo_mix', {'inputs': 256, 'targets': 64}
  else:
    task, lengths = None, helpers.FEATURE_LENGTHS
  model = helpers.tiny_model(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128)
  lr = schedules.create_learning_rate_scheduler('constant * linear_warmup', 0.01, warmup_steps=10)
  step, history = helpers.run_training(tmp_path, 60, model=model, batch_size=8, period=1000, task=task,
                                       lengths=lengths, learning_rate_fn=lr)
  losses = [h['cross_ent_loss_per_token'] for h in history]
  assert step == 60
  assert np.mean(losses[-5:]) <= 0.5 * losses[0], losses


@pytest.mark.slow
def test_early_stopping_and_keep_best_checkpoint(tmp_path):
  # Validation loss falls while training, so 'max' never improves after the first evaluation:
  # with patience 2 training stops at the third evaluation (step 6), and keep-best holds step 2.
  stop = actions.EarlyStoppingConfig('validation/loss', mode='max', patience=2)
  step, history = helpers.run_training(
      tmp_path, 20, eval_period=2, early_stopping=stop, keep=1,
      keep_best_metric='validation/loss', keep_best_mode='max', history_length=3)
  assert step == 6
  assert [h['step'] for h in history] == [4, 5, 6]  # bounded: the last 3 logged steps
  kept = sorted(int(p.split('_')[1]) for p in os.listdir(tmp_path) if p.startswith('checkpoint_'))
  assert kept == [2, 6]  # the best by the metric and the latest


@pytest.mark.slow
def test_stop_at_loss_and_log_period(tmp_path):
  step, history = helpers.run_training(tmp_path, 12, period=100, log_period=4, stop_at_loss=1e9)
  # The log at step 4 is read one step late, so training stops at step 5 and logs that step too.
  assert step == 5 and [h['step'] for h in history] == [4, 5]

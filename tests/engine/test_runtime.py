"""Runtime start: cluster detection, flag errors, the per-host line; actions' metric arithmetic."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import actions
from flan_t5x import runtime


@pytest.mark.parametrize('env, expected', [
    ({}, None),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}, None),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, 'slurm'),
    ({'TPU_WORKER_HOSTNAMES': 'w0'}, None),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, 'tpu_vm'),
])
def test_cluster_environment(monkeypatch, env, expected):
  for name in ('SLURM_JOB_ID', 'SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert runtime.cluster_environment() == expected


def test_multiprocess_needs_count_and_index():
  with pytest.raises(ValueError, match='--process_count, --process_index'):
    runtime.initialize(multiprocess=True, coordinator_address='localhost:1')
  with pytest.raises(ValueError, match='outside 0..1'):
    runtime.initialize(coordinator_address='localhost:1', process_count=2, process_index=2)


def test_single_process_starts_nothing_and_names_its_devices(capsys):
  runtime.initialize()
  line = capsys.readouterr().err
  assert line.startswith('[flan_t5x] process 0/1 on ') and f'of {jax.device_count()} in all' in line
  assert jax.process_count() == 1


def _step_metrics(loss, finite=True, tokens=4.0):
  return {'loss': jnp.float32(loss), 'z_loss': jnp.float32(0.0), 'cross_ent_sum': jnp.float32(loss * tokens),
          'correct_tokens': jnp.float32(tokens / 2), 'num_tokens': jnp.float32(tokens),
          'learning_rate': jnp.float32(0.1), 'finite': jnp.asarray(finite)}


def test_metrics_accumulate_on_device_and_summarize_per_step_and_token():
  acc = actions.MetricsAccumulator()
  acc.add(_step_metrics(1.0, tokens=2.0))
  acc.add(_step_metrics(3.0, tokens=6.0))
  assert acc.finite()
  summary = actions.summarize(jax.device_get(acc.take()))
  assert summary['loss'] == pytest.approx(2.0)  # mean over the 2 steps
  assert summary['cross_ent_loss_per_token'] == pytest.approx((2.0 + 18.0) / 8.0)
  assert summary['accuracy'] == pytest.approx(0.5) and summary['num_tokens'] == pytest.approx(4.0)
  assert acc.take() is None and acc.finite()  # taken: starts afresh


def test_one_non_finite_step_marks_the_whole_period():
  acc = actions.MetricsAccumulator()
  for finite in (True, False, True):
    acc.add(_step_metrics(np.nan if not finite else 1.0, finite=finite))
  assert not acc.finite()


@pytest.mark.parametrize('value, best, mode, delta, expected', [
    (1.0, None, 'min', 0.0, True), (0.9, 1.0, 'min', 0.0, True), (0.95, 1.0, 'min', 0.1, False),
    (1.1, 1.0, 'max', 0.0, True), (1.0, 1.0, 'max', 0.0, False)])
def test_improved(value, best, mode, delta, expected):
  assert actions.improved(value, best, mode, delta) is expected


def test_early_stopping_config_errors():
  with pytest.raises(ValueError, match="'min' or 'max'"):
    actions.EarlyStoppingConfig('validation/loss', mode='lowest')
  with pytest.raises(ValueError, match='patience'):
    actions.EarlyStoppingConfig('validation/loss', patience=0)

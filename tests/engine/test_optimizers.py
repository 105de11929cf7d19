"""Adafactor matches a NumPy transcription of T5X's update rule; LR schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flan_t5x import optimizers
from flan_t5x import schedules


def _t5x_adafactor_step(param, grad, v_row, v_col, v, step, lr, factored):
  """One step of T5X Adafactor (defaults: decay 0.8, clip 1.0, eps1 1e-30, eps2 1e-3)."""
  decay = 1.0 - (step + 1.0) ** -0.8
  grad_sqr = grad * grad + 1e-30
  if factored:
    v_row = decay * v_row + (1 - decay) * grad_sqr.mean(axis=1)
    v_col = decay * v_col + (1 - decay) * grad_sqr.mean(axis=0)
    row_factor = (v_row / v_row.mean()) ** -0.5
    update = grad * row_factor[:, None] * (v_col ** -0.5)[None, :]
  else:
    v = decay * v + (1 - decay) * grad_sqr
    update = grad * v ** -0.5
  update = update / max(1.0, np.sqrt(np.mean(update ** 2)) / 1.0)
  update = lr * update * max(np.sqrt(np.mean(param ** 2)), 1e-3)
  return param - update, v_row, v_col, v


def test_adafactor_matches_t5x_rule_for_two_steps():
  rng = np.random.RandomState(0)
  params = {'kernel': rng.randn(256, 128).astype(np.float32) * 0.05,
            'scale': rng.randn(64).astype(np.float32)}
  tx = optimizers.Adafactor().create(0.01)
  state = tx.init(params)
  ref = {'kernel': [params['kernel'].astype(np.float64), np.zeros(256), np.zeros(128), None],
         'scale': [params['scale'].astype(np.float64), None, None, np.zeros(64)]}
  current = params
  for step in range(2):
    grads = {k: rng.randn(*v.shape).astype(np.float32) for k, v in params.items()}
    updates, state = tx.update(grads, state, current)
    current = optax.apply_updates(current, updates)
    for name, factored in (('kernel', True), ('scale', False)):
      p, vr, vc, v = ref[name]
      ref[name] = list(_t5x_adafactor_step(p, grads[name].astype(np.float64), vr, vc, v, step, 0.01, factored))
      np.testing.assert_allclose(current[name], ref[name][0], rtol=2e-5, atol=1e-7)


def test_adamw_option_updates_params():
  params = {'w': jnp.ones((3,))}
  tx = optimizers.AdamW(weight_decay=0.1, global_norm_clip=1.0).create(0.1)
  updates, _ = tx.update({'w': jnp.ones((3,))}, tx.init(params), params)
  assert float(updates['w'][0]) < 0


def test_schedule_factors():
  fn = schedules.create_learning_rate_scheduler('constant * linear_warmup * rsqrt_decay', 1.0, warmup_steps=100)
  np.testing.assert_allclose(fn(50), 0.5 / 10, rtol=1e-6)
  np.testing.assert_allclose(fn(400), 1 / 20, rtol=1e-6)
  cosine = schedules.create_learning_rate_scheduler('constant * cosine_decay', 2.0, warmup_steps=0,
                                                    steps_per_cycle=100)
  np.testing.assert_allclose([cosine(0), cosine(50)], [2.0, 1.0], rtol=1e-5)
  linear = schedules.create_learning_rate_scheduler('constant * linear_decay', 1.0, warmup_steps=10,
                                                    decay_steps=110, min_learning_rate=0.0)
  np.testing.assert_allclose([linear(10), linear(60), linear(200)], [1.0, 0.5, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match=r"unknown factors \['warmup'\]"):
    schedules.create_learning_rate_scheduler('constant * warmup')

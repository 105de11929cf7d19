"""Cross entropy / z-loss / label smoothing / normalizing factors against direct formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import losses


def _batch():
  rng = np.random.RandomState(0)
  targets = rng.randint(1, 7, size=(2, 5)).astype(np.int32)
  targets[1, 3:] = 0
  weights = (targets > 0).astype(np.float32)
  logits = rng.randn(2, 5, 7).astype(np.float32)
  return logits, targets, weights


def test_label_smoothing_and_z_loss_match_soft_target_cross_entropy():
  logits, targets, weights = _batch()
  smoothing, z = 0.1, 1e-4
  total, z_total, _ = losses.cross_entropy_with_z_loss(jnp.asarray(logits), targets, weights, smoothing, z, None)
  vocab = logits.shape[-1]
  soft = np.full(logits.shape, smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1 - smoothing, axis=-1)
  log_z = np.log(np.exp(logits).sum(-1))
  ce = -(soft * (logits - log_z[..., None])).sum(-1)
  const = -((1 - smoothing) * np.log(1 - smoothing) + smoothing * np.log(smoothing / (vocab - 1)))
  expected = ((ce - const + z * log_z ** 2) * weights).sum()
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  np.testing.assert_allclose(z_total, (z * log_z ** 2 * weights).sum(), rtol=1e-5)


def test_normalizing_factors():
  _, targets, weights = _batch()
  batch = {'decoder_target_tokens': targets, 'decoder_loss_weights': weights}
  factor, _ = losses.normalizing_factor_and_weights('NUM_REAL_TARGET_TOKENS', batch)
  assert float(factor) == 8
  factor, _ = losses.normalizing_factor_and_weights('NUM_TOTAL_TARGET_TOKENS', batch)
  assert float(factor) == 10
  assert losses.normalizing_factor_and_weights(128.0, batch)[0] == 128.0
  # Two packed sequences of 2 and 3 real tokens in row 0, one of 3 in row 1.
  packed = dict(batch, decoder_segment_ids=np.array([[1, 1, 2, 2, 2], [1, 1, 1, 0, 0]]))
  factor, scaled = losses.normalizing_factor_and_weights('AVERAGE_PER_SEQUENCE', packed)
  np.testing.assert_allclose(scaled[0], [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(factor, 3.0, rtol=1e-6)
  with pytest.raises(ValueError, match='NUM_REAL_TARGET_TOKENS'):
    losses.parse_loss_normalizing_factor('NUM_TOKENS')

"""Cross entropy with z-loss and label smoothing, and T5X's loss normalization."""

from __future__ import annotations

import enum
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from flan_t5x import vocab_chunked_loss

Array = jax.Array


class SpecialLossNormalizingFactor(enum.Enum):
  """Batch-dependent normalizers, named as in T5X."""
  NUM_REAL_TARGET_TOKENS = 1
  NUM_TOTAL_TARGET_TOKENS = 2
  AVERAGE_PER_SEQUENCE = 3


def parse_loss_normalizing_factor(value) -> float | SpecialLossNormalizingFactor | None:
  """Accepts None, a positive number, an enum member or its name (gin passes strings)."""
  if value is None or isinstance(value, SpecialLossNormalizingFactor):
    return value
  if isinstance(value, str):
    try:
      return SpecialLossNormalizingFactor[value]
    except KeyError:
      raise ValueError(f'loss_normalizing_factor={value!r}; expected a number or one of '
                       f'{[m.name for m in SpecialLossNormalizingFactor]}.') from None
  factor = float(value)
  if not factor > 0:
    raise ValueError(f'loss_normalizing_factor must be positive, got {value!r}.')
  return factor


def _sum_weights_per_segment(segment_ids_BxT: Array, weights_BxT: Array) -> Array:
  """For each token, the total weight of the packed sequence it belongs to."""
  same_segment_BxTxT = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
  return jnp.einsum('btu,bu->bt', same_segment_BxTxT.astype(weights_BxT.dtype), weights_BxT)


def normalizing_factor_and_weights(loss_normalizing_factor, batch: Mapping[str, Array]):
  """Returns (factor or None, per-token loss weights) as T5X's get_loss_normalizing_factor_and_weights."""
  factor = parse_loss_normalizing_factor(loss_normalizing_factor)
  targets_BxT = batch['decoder_target_tokens']
  weights_BxT = batch.get('decoder_loss_weights')
  if weights_BxT is None:
    weights_BxT = (targets_BxT > 0)
  weights_BxT = jnp.asarray(weights_BxT, jnp.float32)
  if not isinstance(factor, SpecialLossNormalizingFactor):
    return factor, weights_BxT
  if factor is SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS:
    return jnp.sum(weights_BxT), weights_BxT
  if factor is SpecialLossNormalizingFactor.NUM_TOTAL_TARGET_TOKENS:
    return float(np.prod(targets_BxT.shape)), weights_BxT
  if 'decoder_segment_ids' in batch:
    per_sequence_BxT = _sum_weights_per_segment(batch['decoder_segment_ids'], weights_BxT)
  else:
    per_sequence_BxT = jnp.sum(weights_BxT, axis=-1, keepdims=True)
  weights_BxT = jnp.where(per_sequence_BxT > 0, weights_BxT / jnp.maximum(per_sequence_BxT, 1e-30), 0.0)
  return jnp.sum(weights_BxT), weights_BxT


def cross_entropy_with_z_loss(logits_BxTxV: Array, targets_BxT: Array, weights_BxT: Array,
                              label_smoothing: float, z_loss: float, loss_normalizing_factor):
  """Weighted cross entropy as T5X's compute_weighted_cross_entropy.

  Returns (total loss incl. z-loss, z-loss, per-token cross entropy). With
  loss_normalizing_factor None the loss is a sum over tokens (T5X default).
  """
  batch, length, vocab_size = logits_BxTxV.shape
  stats = vocab_chunked_loss.plain_logit_statistics(logits_BxTxV.reshape(batch * length, vocab_size),
                                                    targets_BxT.reshape(-1))
  return cross_entropy_from_statistics(stats, vocab_size, targets_BxT.shape, weights_BxT, label_smoothing,
                                       z_loss, loss_normalizing_factor)


def cross_entropy_from_statistics(stats: vocab_chunked_loss.LogitStatistics, vocab_size: int,
                                  shape: tuple[int, int], weights_BxT: Array, label_smoothing: float,
                                  z_loss: float, loss_normalizing_factor):
  """`cross_entropy_with_z_loss` from per-token logit statistics (flattened `shape` = (B, T))."""
  confidence = 1.0 - label_smoothing
  low_confidence = (1.0 - confidence) / (vocab_size - 1)
  # Entropy of the smoothed target distribution, so a perfect model has loss 0.
  normalizing_constant = -(confidence * np.log(confidence)
                           + (vocab_size - 1) * low_confidence * np.log(low_confidence + 1e-20))
  log_z_BxT = stats.log_z_N.reshape(shape)
  nll_BxT = log_z_BxT - stats.target_logit_N.reshape(shape)
  if label_smoothing:
    smooth_nll_BxT = log_z_BxT - stats.mean_logit_N.reshape(shape)
    # soft targets: `confidence` on the label, `low_confidence` on every other token.
    loss_BxT = (confidence - low_confidence) * nll_BxT + low_confidence * vocab_size * smooth_nll_BxT
    loss_BxT = loss_BxT - normalizing_constant
  else:
    loss_BxT = nll_BxT
  z_loss_BxT = z_loss * jnp.square(log_z_BxT)
  total_BxT = (loss_BxT + z_loss_BxT) * weights_BxT
  z_loss_BxT = z_loss_BxT * weights_BxT
  if loss_normalizing_factor is not None:
    total_BxT = total_BxT / loss_normalizing_factor
    z_loss_BxT = z_loss_BxT / loss_normalizing_factor
  return jnp.sum(total_BxT), jnp.sum(z_loss_BxT), nll_BxT

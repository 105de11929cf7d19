"""The custom-VJP attention equals autodiff of the plain formula (values and every gradient)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import attention_kernel
from flan_t5x import layers


def _inputs(batch, heads, q_len, k_len, head_dim, dtype, seed=0):
  rng = np.random.RandomState(seed)
  qkv = [jnp.asarray(rng.randn(batch * heads, length, head_dim), dtype)
         for length in (q_len, k_len, k_len)]
  position_bias_HxQxK = jnp.asarray(rng.randn(heads, q_len, k_len), dtype)
  keep_Bx1xQxK = rng.rand(batch, 1, q_len, k_len) > 0.2
  keep_Bx1xQxK[:, :, :, 0] = True  # every row sees at least one key
  mask_bias_Bx1xQxK = jnp.asarray(np.where(keep_Bx1xQxK, 0.0, -1e10), dtype)
  dropout_BxHx1xK = jnp.asarray((rng.rand(batch, heads, 1, k_len) > 0.3) / 0.7, jnp.float32)
  cotangent_GxQxD = jnp.asarray(rng.randn(batch * heads, q_len, head_dim), jnp.float32)
  return qkv, position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK, cotangent_GxQxD


def _value_and_grads(fn, qkv, batch, position_bias, mask_bias, dropout, cotangent):
  def objective(q, k, v, bias):
    context = fn(q, k, v, batch, bias, mask_bias, dropout)
    return jnp.sum(context.astype(jnp.float32) * cotangent), context
  (_, context), grads = jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2, 3), has_aux=True))(
      *qkv, position_bias)
  return context, grads


@pytest.mark.parametrize('use_bias,use_mask,use_dropout', [
    (True, True, False), (False, True, False), (True, True, True), (True, False, True)])
# (B, H, Q, K, D). B=40 > 32 sums with jnp.sum; D=33 > 32 takes the key/value gradients without the
# transposed copy (attention_kernel._MAX_TRANSPOSED_HEAD_DIM).
@pytest.mark.parametrize('shape', [(2, 3, 5, 7, 4), (40, 1, 3, 3, 2), (2, 2, 5, 6, 33)])
def test_matches_reference_in_float32(shape, use_bias, use_mask, use_dropout):
  assert (shape[-1] > attention_kernel._MAX_TRANSPOSED_HEAD_DIM) == (shape[-1] == 33)  # pylint: disable=protected-access
  batch = shape[0]
  qkv, bias, mask, dropout, cotangent = _inputs(*shape, jnp.float32)
  bias = bias if use_bias else None
  mask = mask if use_mask else None
  dropout = dropout if use_dropout else None
  expected = _value_and_grads(attention_kernel.reference_attention, qkv, batch, bias, mask, dropout, cotangent)
  actual = _value_and_grads(attention_kernel.dot_product_attention, qkv, batch, bias, mask, dropout, cotangent)
  for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
  if not use_bias:
    assert actual[1][3] is None


@pytest.mark.parametrize('dtype,tolerance', [(jnp.float32, 2e-5), (jnp.bfloat16, 0.05)])
def test_summed_bias_gives_the_reference_values_and_every_gradient(dtype, tolerance):
  """The encoder's form on CPU: position bias + mask built once (summed_attention_bias) and passed
  besides; the position bias's gradient still comes back, through the kernel."""
  qkv, bias, mask, dropout, cotangent = _inputs(3, 2, 6, 6, 4, dtype, seed=2)

  def with_sum(q, k, v, batch, position_bias, mask_bias, dropout_mask):
    summed = attention_kernel.summed_attention_bias(position_bias, mask_bias)
    assert summed is not None and summed.shape == (3, 2, 6, 6)  # the tests run on the CPU
    return attention_kernel.dot_product_attention(q, k, v, batch, position_bias, mask_bias, dropout_mask,
                                                  summed_bias_BxHxQxK=summed)
  expected = _value_and_grads(attention_kernel.reference_attention, qkv, 3, bias, mask, dropout, cotangent)
  actual = _value_and_grads(with_sum, qkv, 3, bias, mask, dropout, cotangent)
  for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tolerance,
                               atol=tolerance)
  assert attention_kernel.summed_attention_bias(bias, None) is None


def test_matches_reference_in_bfloat16():
  qkv, bias, mask, dropout, cotangent = _inputs(2, 2, 6, 6, 8, jnp.bfloat16, seed=1)
  expected = _value_and_grads(attention_kernel.reference_attention, qkv, 2, bias, mask, dropout, cotangent)
  actual = _value_and_grads(attention_kernel.dot_product_attention, qkv, 2, bias, mask, dropout, cotangent)
  for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0.05, atol=0.05)


def test_fully_masked_rows_stay_finite():
  qkv, bias, _, _, cotangent = _inputs(1, 2, 3, 4, 2, jnp.float32)
  mask = jnp.full((1, 1, 3, 4), -1e10, jnp.float32)
  context, grads = _value_and_grads(attention_kernel.dot_product_attention, qkv, 1, bias, mask, None, cotangent)
  assert np.all(np.isfinite(np.asarray(context)))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_rejects_rows_that_are_not_batch_times_heads():
  qkv, *_ = _inputs(2, 3, 4, 4, 2, jnp.float32)
  with pytest.raises(ValueError, match='batch=4'):
    attention_kernel.dot_product_attention(*qkv, batch=4)


@pytest.mark.parametrize('q_len,k_len,bidirectional', [(5, 7, True), (7, 5, True), (6, 6, False), (1, 4, False)])
def test_relative_position_bias_and_gradient_match_autodiff_of_take(q_len, k_len, bidirectional):
  module = layers.RelativePositionBiases(num_heads=3, num_buckets=8, max_distance=16)
  params = module.init(jax.random.PRNGKey(0), q_len, k_len, bidirectional=bidirectional)
  cotangent_1xHxQxK = jnp.asarray(np.random.RandomState(0).randn(1, 3, q_len, k_len), jnp.float32)
  bucket_QxK = layers.relative_position_bucket(np.arange(k_len)[None, :] - np.arange(q_len)[:, None],
                                               bidirectional, 8, 16)

  def plain(table_HxR):
    return jnp.sum(jnp.take(table_HxR, jnp.asarray(bucket_QxK), axis=1)[None] * cotangent_1xHxQxK)

  def ours(table_HxR):
    bias = module.apply({'params': {'rel_embedding': table_HxR}}, q_len, k_len, bidirectional=bidirectional)
    return jnp.sum(bias * cotangent_1xHxQxK)

  table_HxR = params['params']['rel_embedding'].value
  np.testing.assert_allclose(np.asarray(jax.grad(ours)(table_HxR)), np.asarray(jax.grad(plain)(table_HxR)),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(ours(table_HxR)), float(plain(table_HxR)), rtol=1e-6)

"""Dot-product attention with a hand-written backward pass (custom VJP).

`dot_product_attention` computes softmax(q k^T + position_bias + mask_bias) v
for T5 (no 1/sqrt(d) scaling, per-head relative position bias shared over the
batch, an additive mask shared over heads, optional dropout on the weights).

Why a custom VJP: differentiating the plain softmax makes XLA keep and re-read
several `(B, H, Q, K)` tensors (the broadcast bias sum, the normalizer, the
softmax product and its row sums), and on CPU those elementwise passes cost more
than the matmuls. The backward here keeps only the softmax output and uses
    dlogits = p * (dp - rowsum(p * dp)),   rowsum(p * dp) = rowsum(dcontext * context)
so the row sums come from the `(B, H, Q, D)` context instead of a pass over the
`(B, H, Q, K)` weights (the FlashAttention identity; it also holds with dropout,
since context is computed from the dropped weights). The position-bias gradient
is summed over the batch here, never broadcast to `(B, H, Q, K)` first.

The math is the plain attention's; tests compare values and gradients against
`reference_attention` (autodiff of the plain formula) in float32 and bfloat16.

Shape suffixes: B batch, H heads, G = B*H, Q query length, K key length, D head dim.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flan_t5x import partitioning

Array = jax.Array

_MAX_UNROLLED_BATCH = 32
# Head dimensions up to this take the key/value gradients through a transposed copy (_key_side_gradient);
# measured: 16 gains, 64 loses; 32 is between them and unmeasured.
_MAX_TRANSPOSED_HEAD_DIM = 32


def _batched_matmul(a: Array, b: Array, contract_a: int, contract_b: int) -> Array:
  """(G, ., .) x (G, ., .) -> (G, ., .) in float32, contracting one non-batch axis of each."""
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0,), (0,))),
                             preferred_element_type=jnp.float32)


def _weights(q_GxQxD, k_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, batch: int,
             summed_bias_BxHxQxK=None) -> Array:
  """Softmax weights (B, H, Q, K) in float32."""
  heads = q_GxQxD.shape[0] // batch
  q_len, k_len = q_GxQxD.shape[1], k_GxKxD.shape[1]
  logits_BxHxQxK = _batched_matmul(q_GxQxD, k_GxKxD, 2, 2).reshape(batch, heads, q_len, k_len)
  if summed_bias_BxHxQxK is not None:
    return jax.nn.softmax(logits_BxHxQxK + summed_bias_BxHxQxK.astype(jnp.float32), axis=-1)
  if position_bias_HxQxK is not None:
    logits_BxHxQxK = logits_BxHxQxK + position_bias_HxQxK.astype(jnp.float32)[None]
  if mask_bias_Bx1xQxK is not None:
    logits_BxHxQxK = logits_BxHxQxK + mask_bias_Bx1xQxK.astype(jnp.float32)
  return jax.nn.softmax(logits_BxHxQxK, axis=-1)


def _context(weights_BxHxQxK, dropout_BxHx1xK, v_GxKxD):
  batch, heads, q_len, k_len = weights_BxHxQxK.shape
  if dropout_BxHx1xK is not None:
    weights_BxHxQxK = weights_BxHxQxK * dropout_BxHx1xK.astype(jnp.float32)
  weights_GxQxK = weights_BxHxQxK.reshape(batch * heads, q_len, k_len).astype(v_GxKxD.dtype)
  return _batched_matmul(weights_GxQxK, v_GxKxD, 2, 1), weights_GxQxK


def _sum_over_batch(x_BxHxQxK: Array) -> Array:
  """Sum over the leading axis; for small batches as a chain of adds, which XLA fuses into the
  pass that computes x (XLA:CPU's reduce over a leading axis of (B, H*Q*K) took longer than the
  rest of the attention backward)."""
  # Only on CPU: elsewhere (and for large batches, which a mesh shards) jnp.sum is the fast form.
  if partitioning.compute_platform() != 'cpu' or x_BxHxQxK.shape[0] > _MAX_UNROLLED_BATCH:
    return jnp.sum(x_BxHxQxK, axis=0)
  total_HxQxK = x_BxHxQxK[0]
  for row in range(1, x_BxHxQxK.shape[0]):
    total_HxQxK = total_HxQxK + x_BxHxQxK[row]
  return total_HxQxK


def _key_side_gradient(weights_GxQxK: Array, x_GxQxD: Array) -> Array:
  """weights^T x, (G, K, D) in float32: the key and value gradients, which contract over queries.

  XLA:CPU's YNNPACK declines a dot whose left operand contracts over its rows, so Eigen runs these,
  slowly when the head dimension is small. For heads up to _MAX_TRANSPOSED_HEAD_DIM the weights are
  first transposed into a (G, K, Q) array of their own, behind an optimization barrier (without it
  XLA folds the transpose back into the dot), and YNNPACK runs a plain dot. The transpose is a pass
  over (G, Q, K) whatever the head dimension, the dot's work grows with it: on the Zen 3 machine of
  docs/performance.md the tiny model's step (head dimension 16) ran 18% faster, flan_t5_small's
  (64) 5-10% slower. Elsewhere than the CPU the dot takes the transposed operand as it is.
  """
  if partitioning.compute_platform() != 'cpu' or x_GxQxD.shape[-1] > _MAX_TRANSPOSED_HEAD_DIM:
    return _batched_matmul(weights_GxQxK, x_GxQxD, 1, 1)
  weights_GxKxQ = jax.lax.optimization_barrier(jnp.swapaxes(weights_GxQxK, 1, 2))
  return _batched_matmul(weights_GxKxQ, x_GxQxD, 2, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _attention(q_GxQxD, k_GxKxD, v_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK,
               summed_bias_BxHxQxK, batch):
  return _attention_fwd(q_GxQxD, k_GxKxD, v_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK,
                        summed_bias_BxHxQxK, batch)[0]


def _attention_fwd(q_GxQxD, k_GxKxD, v_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK,
                   summed_bias_BxHxQxK, batch):
  weights_BxHxQxK = _weights(q_GxQxD, k_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, batch,
                             summed_bias_BxHxQxK)
  context_GxQxD, dropped_GxQxK = _context(weights_BxHxQxK, dropout_BxHx1xK, v_GxKxD)
  context_GxQxD = context_GxQxD.astype(q_GxQxD.dtype)
  residuals = (q_GxQxD, k_GxKxD, v_GxKxD, weights_BxHxQxK, dropped_GxQxK, context_GxQxD,
               position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK, summed_bias_BxHxQxK)
  return context_GxQxD, residuals


def _attention_bwd(batch, residuals, dcontext_GxQxD):
  (q_GxQxD, k_GxKxD, v_GxKxD, weights_BxHxQxK, dropped_GxQxK, context_GxQxD,
   position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK, summed_bias_BxHxQxK) = residuals
  _, heads, q_len, k_len = weights_BxHxQxK.shape
  dv_GxKxD = _key_side_gradient(dropped_GxQxK, dcontext_GxQxD)
  dweights_BxHxQxK = _batched_matmul(dcontext_GxQxD, v_GxKxD, 2, 2).reshape(weights_BxHxQxK.shape)
  if dropout_BxHx1xK is not None:
    dweights_BxHxQxK = dweights_BxHxQxK * dropout_BxHx1xK.astype(jnp.float32)
  rowsum_BxHxQx1 = jnp.sum(dcontext_GxQxD.astype(jnp.float32) * context_GxQxD.astype(jnp.float32),
                           axis=-1).reshape(batch, heads, q_len, 1)
  dlogits_BxHxQxK = weights_BxHxQxK * (dweights_BxHxQxK - rowsum_BxHxQx1)
  dlogits_GxQxK = dlogits_BxHxQxK.reshape(batch * heads, q_len, k_len).astype(q_GxQxD.dtype)
  dq_GxQxD = _batched_matmul(dlogits_GxQxK, k_GxKxD, 2, 1).astype(q_GxQxD.dtype)
  dk_GxKxD = _key_side_gradient(dlogits_GxQxK, q_GxQxD).astype(k_GxKxD.dtype)
  dposition_bias = None
  if position_bias_HxQxK is not None:
    dposition_bias = _sum_over_batch(dlogits_BxHxQxK).astype(position_bias_HxQxK.dtype)
  # The mask and the dropout multiplier are constants of the step: no gradient.
  dmask = None if mask_bias_Bx1xQxK is None else jnp.zeros_like(mask_bias_Bx1xQxK)
  ddropout = None if dropout_BxHx1xK is None else jnp.zeros_like(dropout_BxHx1xK)
  # The summed bias stands in for position bias + mask in the forward; the position bias's
  # gradient is returned above, so the sum gets none (its producer stops gradients anyway).
  dsummed = None if summed_bias_BxHxQxK is None else jnp.zeros_like(summed_bias_BxHxQxK)
  return dq_GxQxD, dk_GxKxD, dv_GxKxD.astype(v_GxKxD.dtype), dposition_bias, dmask, ddropout, dsummed


_attention.defvjp(_attention_fwd, _attention_bwd)


def dot_product_attention(q_GxQxD: Array, k_GxKxD: Array, v_GxKxD: Array, batch: int,
                          position_bias_HxQxK: Array | None = None,
                          mask_bias_Bx1xQxK: Array | None = None,
                          dropout_BxHx1xK: Array | None = None,
                          summed_bias_BxHxQxK: Array | None = None) -> Array:
  """Context `(G, Q, D)` in q's dtype; G = batch * heads, rows ordered (batch, head).

  `dropout_BxHx1xK` multiplies the softmax weights (0 or 1/keep_rate; T5 broadcasts attention
  dropout over the query axis). The mask and dropout get no gradient.

  `summed_bias_BxHxQxK`: position bias + mask bias, computed once by a caller whose layers all
  share them (`summed_attention_bias`). The forward adds it instead of the two; the position
  bias still gets its gradient. Why: XLA:CPU's fused matmul + softmax takes its addends
  as full (B, H, Q, K) operands, so given the two apart it materializes both broadcasts and every
  layer reads both; given the sum, one tensor is built and read.
  """
  if q_GxQxD.shape[0] % batch:
    raise ValueError(f'{q_GxQxD.shape[0]} query rows are not batch={batch} times a number of heads.')
  return _attention(q_GxQxD, k_GxKxD, v_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK,
                    summed_bias_BxHxQxK, batch)


def summed_attention_bias(position_bias_HxQxK: Array | None, mask_bias_Bx1xQxK: Array | None
                          ) -> Array | None:
  """position bias + mask bias as one (B, H, Q, K) float32 tensor without gradient (the kernel
  returns the position bias's gradient itself); None unless both are given, and None off the CPU:
  GPU and TPU fusions read the two broadcasts in place, where a materialized sum would only add
  memory (B * H * Q * K floats: 2 GiB at batch 128, 16 heads, 512 tokens)."""
  if position_bias_HxQxK is None or mask_bias_Bx1xQxK is None or partitioning.compute_platform() != 'cpu':
    return None
  return jax.lax.stop_gradient(position_bias_HxQxK.astype(jnp.float32)[None]
                               + mask_bias_Bx1xQxK.astype(jnp.float32))


def reference_attention(q_GxQxD: Array, k_GxKxD: Array, v_GxKxD: Array, batch: int,
                        position_bias_HxQxK: Array | None = None,
                        mask_bias_Bx1xQxK: Array | None = None,
                        dropout_BxHx1xK: Array | None = None) -> Array:
  """The plain formula, differentiated by JAX: what `dot_product_attention` must equal."""
  weights_BxHxQxK = _weights(q_GxQxD, k_GxKxD, position_bias_HxQxK, mask_bias_Bx1xQxK, batch)
  context_GxQxD, _ = _context(weights_BxHxQxK, dropout_BxHx1xK, v_GxKxD)
  return context_GxQxD.astype(q_GxQxD.dtype)

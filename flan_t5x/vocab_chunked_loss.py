"""Output projection + softmax statistics computed in chunks over the vocabulary (custom VJP).

The loss of a T5 step needs, per target token, only a few numbers of its
`(vocab,)` logits row: log Z (for cross entropy and z-loss), the target's logit,
the mean logit (label smoothing) and the argmax (accuracy). `logit_statistics`
computes them from the decoder output and the `(embed, vocab)` kernel one
vocabulary chunk at a time, so the `(tokens, vocab)` logits (1024 x 32128 floats
= 128 MiB for a batch of 8 x 128 targets) and their gradient never exist in full.
The backward pass recomputes each chunk's logits (one more matmul) and turns
the statistics' cotangents into that chunk's logit gradient:
    dlogits = dlog_z * softmax + dtarget * onehot(target) + dmean / vocab
then accumulates the embedding gradient and writes the kernel's chunk.

The math equals the plain path (logits, then losses.cross_entropy_with_z_loss);
tests compare losses and gradients. Shape suffixes: N tokens, E embed, V vocab,
C chunks, W chunk width.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class LogitStatistics(NamedTuple):
  log_z_N: Array       # logsumexp over the vocabulary
  target_logit_N: Array
  mean_logit_N: Array
  # First index of the row's maximum, as jnp.argmax (T5X's accuracy): ties go to the lowest id,
  # so all-equal logits predict id 0 (padding), never a real target.
  argmax_N: Array


def num_chunks(vocab_size: int, max_chunk_width: int) -> int:
  """The fewest chunks of at most `max_chunk_width` columns that split the vocabulary evenly."""
  if max_chunk_width <= 0:
    raise ValueError(f'max_chunk_width must be positive, got {max_chunk_width}.')
  for chunks in range(max(1, -(-vocab_size // max_chunk_width)), vocab_size + 1):
    if vocab_size % chunks == 0:
      return chunks
  return vocab_size


def _kernel_chunk(kernel_ExV: Array, index: Array, width: int) -> Array:
  # A slice of columns, not a (chunks, embed, width) transpose of the kernel: that copy cost as
  # much as a chunk's matmul.
  return jax.lax.dynamic_slice_in_dim(kernel_ExV, index * width, width, axis=1)


def _chunk_logits(y_NxE, kernel_ExW):
  return jnp.dot(y_NxE, kernel_ExW.astype(y_NxE.dtype), preferred_element_type=jnp.float32)


def _forward(y_NxE, kernel_ExV, targets_N, chunks):
  tokens = y_NxE.shape[0]
  width = kernel_ExV.shape[1] // chunks

  def body(carry, index):
    max_N, argmax_N, sum_exp_N, target_N, sum_logits_N = carry
    kernel_ExW = _kernel_chunk(kernel_ExV, index, width)
    logits_NxW = _chunk_logits(y_NxE, kernel_ExW)
    chunk_max_N = jnp.max(logits_NxW, axis=-1)
    # Strictly greater: an equal maximum in a later chunk keeps the earlier (lower) index.
    argmax_N = jnp.where(chunk_max_N > max_N, index * width + jnp.argmax(logits_NxW, axis=-1), argmax_N)
    new_max_N = jnp.maximum(max_N, chunk_max_N)
    sum_exp_N = (sum_exp_N * jnp.exp(max_N - new_max_N)
                 + jnp.sum(jnp.exp(logits_NxW - new_max_N[:, None]), axis=-1))
    column_N = targets_N - index * width
    in_chunk_N = (column_N >= 0) & (column_N < width)
    picked_N = jnp.take_along_axis(logits_NxW, jnp.clip(column_N, 0, width - 1)[:, None], axis=-1)[:, 0]
    target_N = jnp.where(in_chunk_N, picked_N, target_N)
    return (new_max_N, argmax_N, sum_exp_N, target_N, sum_logits_N + jnp.sum(logits_NxW, axis=-1)), None

  zeros_N = jnp.zeros((tokens,), jnp.float32)
  init = (jnp.full((tokens,), -jnp.inf, jnp.float32), jnp.zeros((tokens,), jnp.int32), zeros_N, zeros_N, zeros_N)
  (max_N, argmax_N, sum_exp_N, target_N, sum_logits_N), _ = jax.lax.scan(body, init, jnp.arange(chunks))
  log_z_N = max_N + jnp.log(sum_exp_N)
  return LogitStatistics(log_z_N, target_N, sum_logits_N / kernel_ExV.shape[1], argmax_N)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _statistics(y_NxE, kernel_ExV, targets_N, chunks):
  return _forward(y_NxE, kernel_ExV, targets_N, chunks)


def _statistics_fwd(y_NxE, kernel_ExV, targets_N, chunks):
  stats = _forward(y_NxE, kernel_ExV, targets_N, chunks)
  return stats, (y_NxE, kernel_ExV, targets_N, stats.log_z_N)


def _statistics_bwd(chunks, residuals, cotangents):
  y_NxE, kernel_ExV, targets_N, log_z_N = residuals
  dlog_z_N, dtarget_N, dmean_N, _ = cotangents  # the argmax (integer) has no gradient
  vocab = kernel_ExV.shape[1]
  width = vocab // chunks
  dmean_N = dmean_N / vocab

  def body(carry, index):
    dy_NxE, dkernel_ExV = carry
    kernel_ExW = _kernel_chunk(kernel_ExV, index, width)
    logits_NxW = _chunk_logits(y_NxE, kernel_ExW)
    columns_W = index * width + jnp.arange(width)
    dlogits_NxW = (dlog_z_N[:, None] * jnp.exp(logits_NxW - log_z_N[:, None])
                   + jnp.where(columns_W[None, :] == targets_N[:, None], dtarget_N[:, None], 0.0)
                   + dmean_N[:, None])
    dlogits_NxW = dlogits_NxW.astype(y_NxE.dtype)
    dy_NxE = dy_NxE + jnp.dot(dlogits_NxW, kernel_ExW.astype(y_NxE.dtype).T,
                              preferred_element_type=jnp.float32)
    dkernel_ExW = jnp.dot(y_NxE.T, dlogits_NxW, preferred_element_type=jnp.float32)
    dkernel_ExV = jax.lax.dynamic_update_slice_in_dim(dkernel_ExV, dkernel_ExW.astype(kernel_ExV.dtype),
                                                      index * width, axis=1)
    return (dy_NxE, dkernel_ExV), None

  init = (jnp.zeros(y_NxE.shape, jnp.float32), jnp.zeros(kernel_ExV.shape, kernel_ExV.dtype))
  (dy_NxE, dkernel_ExV), _ = jax.lax.scan(body, init, jnp.arange(chunks))
  return dy_NxE.astype(y_NxE.dtype), dkernel_ExV, None


_statistics.defvjp(_statistics_fwd, _statistics_bwd)


def logit_statistics(y_NxE: Array, kernel_ExV: Array, targets_N: Array, max_chunk_width: int
                     ) -> LogitStatistics:
  """Statistics of `logits = y @ kernel` (float32) without materializing the logits."""
  if y_NxE.ndim != 2 or kernel_ExV.ndim != 2 or y_NxE.shape[1] != kernel_ExV.shape[0]:
    raise ValueError(f'Expected y (tokens, embed) and kernel (embed, vocab); got {y_NxE.shape} '
                     f'and {kernel_ExV.shape}.')
  chunks = num_chunks(kernel_ExV.shape[1], max_chunk_width)
  return _statistics(y_NxE, kernel_ExV, targets_N.astype(jnp.int32), chunks)


def plain_logit_statistics(logits_NxV: Array, targets_N: Array) -> LogitStatistics:
  """The same statistics from materialized logits (the reference, and the path for tied embeddings)."""
  logits_NxV = logits_NxV.astype(jnp.float32)
  return LogitStatistics(jax.nn.logsumexp(logits_NxV, axis=-1),
                         jnp.take_along_axis(logits_NxV, targets_N[:, None], axis=-1)[:, 0],
                         jnp.mean(logits_NxV, axis=-1),
                         jnp.argmax(logits_NxV, axis=-1).astype(jnp.int32))

"""T5.1.1 building blocks in Flax linen, parameter-compatible with T5X.

Parameter names, shapes and logical axis names follow T5X's
`t5x/examples/t5/layers.py`: every kernel is stored 2-D `(in, out)` in float32
and annotated with logical axes; activations run in `dtype` (bf16 for real
configs). Dense layers are computed on 2-D `(batch*length, features)` operands
and attention as `(batch*heads)` batched matmuls: on XLA:CPU this lowers to
plain GEMMs whose backward pass is several times faster than general einsums.
Training attention runs `flan_t5x.attention_kernel` (a hand-written backward).

Shape suffixes: B batch, L length (Q query, K key), E embed, H heads,
D head dim, M mlp, V vocab, N flattened batch*length.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flan_t5x import attention_kernel
from flan_t5x import lora as lora_lib
from flan_t5x import partitioning

Array = jax.Array
Initializer = Callable[..., Array]

# Large negative number (not -inf) so fully-masked rows stay finite, as T5X.
_MASK_VALUE = -1e10

default_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


def constrain(x: Array, logical_axes: Sequence[str | None]) -> Array:
  """Sharding constraint by logical names; a no-op outside a partitioner context."""
  rules = nn.get_logical_axis_rules()
  if not rules:
    return x
  partitioning.check_logical_axes(logical_axes, rules, where='(activation) ')
  return nn.with_logical_constraint(x, tuple(logical_axes))


def logical_param(module: nn.Module, name: str, init: Initializer, shape: Sequence[int],
                  axes: Sequence[str]) -> Array:
  """Declares a float32 parameter annotated with logical axis names."""
  if len(axes) != len(shape):
    raise ValueError(f'Parameter {name!r}: {len(axes)} axis names {tuple(axes)} for shape {tuple(shape)}.')
  boxed_init = nn.with_logical_partitioning(init, tuple(axes))
  return module.param(name, boxed_init, tuple(shape), jnp.float32)


class Dense(nn.Module):
  """Linear map on 2-D operands; kernel stored as T5X's 2-D `(in, out)`.

  With a `lora` config whose targets match this module's path, a low-rank adapter
  (`lora_a`, `lora_b`, see flan_t5x.lora) is added beside the kernel.
  """
  features: int
  kernel_axes: tuple[str, str]
  dtype: jnp.dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  lora: Any = None  # lora.LoraConfig | None

  @nn.compact
  def __call__(self, x_NxI: Array, deterministic: bool = True) -> Array:
    if x_NxI.ndim != 2:
      raise ValueError(f'Dense expects a 2-D operand, got shape {x_NxI.shape}.')
    in_dim = x_NxI.shape[-1]
    kernel_IxO = logical_param(self, 'kernel', self.kernel_init, (in_dim, self.features), self.kernel_axes)
    x_NxI = x_NxI.astype(self.dtype)
    y_NxO = jnp.dot(x_NxI, kernel_IxO.astype(self.dtype))
    if self.lora is None or not self.lora.applies_to(self.path):
      return y_NxO
    rank = self.lora.rank
    lora_a_IxR = logical_param(self, 'lora_a', lora_lib.lora_a_init, (in_dim, rank),
                               (self.kernel_axes[0], lora_lib.RANK_AXIS))
    lora_b_RxO = logical_param(self, 'lora_b', nn.initializers.zeros, (rank, self.features),
                               (lora_lib.RANK_AXIS, self.kernel_axes[1]))
    x_NxI = nn.Dropout(self.lora.dropout_rate)(x_NxI, deterministic=deterministic)
    low_NxR = jnp.dot(x_NxI, lora_a_IxR.astype(self.dtype))
    return y_NxO + jnp.dot(low_NxR, lora_b_RxO.astype(self.dtype)) * jnp.asarray(self.lora.scale, self.dtype)


class RMSNorm(nn.Module):
  """T5 layer norm: no mean subtraction, no bias; statistics in float32."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x_f32 = x.astype(jnp.float32)
    mean_square = jnp.mean(jnp.square(x_f32), axis=-1, keepdims=True)
    y = (x_f32 * jax.lax.rsqrt(mean_square + self.epsilon)).astype(self.dtype)
    scale_E = logical_param(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',))
    return y * scale_E.astype(self.dtype)


class Embed(nn.Module):
  """Token embedding table `(vocab, embed)`, initialised N(0, 1) as T5X."""
  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BxL: Array) -> Array:
    if not jnp.issubdtype(tokens_BxL.dtype, jnp.integer):
      raise ValueError(f'Embed expects integer token ids, got {tokens_BxL.dtype}.')
    table_VxE = logical_param(self, 'embedding', nn.initializers.normal(stddev=1.0),
                              (self.num_embeddings, self.features), ('vocab', 'embed'))
    return jnp.take(table_VxE.astype(self.dtype), tokens_BxL, axis=0)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """Mesh-TF/T5X bucketing: exact buckets for small distances, log-spaced beyond.

  `relative_position` is memory_position - query_position. Computed in numpy
  because it depends only on static lengths.
  """
  bucket = np.zeros_like(relative_position, dtype=np.int32)
  distance = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (distance < 0).astype(np.int32) * num_buckets
    distance = np.abs(distance)
  else:
    distance = np.maximum(distance, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  log_ratio = (np.log(distance.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
               / np.log(max_distance / max_exact))
  large_bucket = max_exact + (log_ratio * (num_buckets - max_exact)).astype(np.int32)
  large_bucket = np.minimum(large_bucket, num_buckets - 1)
  return bucket + np.where(is_small, distance, large_bucket)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _toeplitz(bias_HxJ: Array, query_length: int, key_length: int) -> Array:
  """(H, Q, K) with [h, q, k] = bias[h, k - q + Q - 1]: one value per relative position."""
  return _toeplitz_fwd(bias_HxJ, query_length, key_length)[0]


def _toeplitz_fwd(bias_HxJ, query_length, key_length):
  relative_QxK = np.arange(key_length)[None, :] - np.arange(query_length)[:, None] + query_length - 1
  return jnp.take(bias_HxJ, jnp.asarray(relative_QxK), axis=1), None


def _toeplitz_bwd(query_length, key_length, _, dbias_HxQxK):
  """Sums each diagonal (k - q constant) of the gradient by skewing rows instead of scattering.

  Autodiff's scatter-add went through a (Q*K, H) transposed layout, the slowest op of a T5-small
  step on CPU. Reversed rows padded to K + Q and re-read with row length K + Q - 1 shift row q'
  right by q', so column j of the skewed matrix holds the diagonal k - q = j - (Q - 1).
  """
  heads = dbias_HxQxK.shape[0]
  width = key_length + query_length - 1
  padded_HxQxW = jnp.pad(dbias_HxQxK[:, ::-1, :], ((0, 0), (0, 0), (0, query_length)))
  flat = padded_HxQxW.reshape(heads, query_length * (width + 1))
  rows = -(-flat.shape[1] // width)
  flat = jnp.pad(flat, ((0, 0), (0, rows * width - flat.shape[1])))
  return (jnp.sum(flat.reshape(heads, rows, width)[:, :query_length], axis=1),)


_toeplitz.defvjp(_toeplitz_fwd, _toeplitz_bwd)


class RelativePositionBiases(nn.Module):
  """Per-head learned bias over relative position buckets, shared by all layers."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  dtype: jnp.dtype = jnp.float32
  embedding_init: Initializer = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform')

  @nn.compact
  def __call__(self, query_length: int, key_length: int, bidirectional: bool) -> Array:
    # The bias depends on k - q only: look up the Q + K - 1 relative positions, then expand.
    relative_J = np.arange(key_length + query_length - 1, dtype=np.int32) - (query_length - 1)
    bucket_J = relative_position_bucket(relative_J, bidirectional, self.num_buckets, self.max_distance)
    rel_embedding_HxR = logical_param(self, 'rel_embedding', self.embedding_init,
                                      (self.num_heads, self.num_buckets),
                                      ('heads', 'relpos_buckets'))
    bias_HxJ = jnp.take(rel_embedding_HxR.astype(self.dtype), jnp.asarray(bucket_J), axis=1)
    return _toeplitz(bias_HxJ, query_length, key_length)[None]


class MultiHeadDotProductAttention(nn.Module):
  """T5 attention: no 1/sqrt(d) at runtime (folded into the query init)."""
  num_heads: int
  head_dim: int
  dtype: jnp.dtype = jnp.float32
  dropout_rate: float = 0.0
  kernel_init: Initializer = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
  lora: Any = None  # lora.LoraConfig | None

  @nn.compact
  def __call__(self, inputs_q_BxQxE: Array, inputs_kv_BxKxE: Array, mask_bias_Bx1xQxK: Array | None,
               deterministic: bool, position_bias_1xHxQxK: Array | None = None,
               summed_bias_BxHxQxK: Array | None = None) -> Array:
    """`mask_bias` (0 or a large negative number) is shared over heads; `position_bias` over the batch;
    `summed_bias`: their sum when the caller built it once for all layers
    (attention_kernel.summed_attention_bias)."""
    batch, q_len, emb_dim = inputs_q_BxQxE.shape
    k_len = inputs_kv_BxKxE.shape[1]
    heads, head_dim = self.num_heads, self.head_dim
    joined = heads * head_dim
    depth_scale = np.sqrt(head_dim).astype(np.float32)
    query_init = lambda *args: self.kernel_init(*args) / depth_scale
    dense = functools.partial(Dense, dtype=self.dtype, lora=self.lora)

    def project(name, x_BxLxE, length, init):
      x_NxJ = dense(joined, ('embed', 'joined_kv'), kernel_init=init, name=name)(
          x_BxLxE.reshape(batch * length, emb_dim), deterministic)
      x_BxLxHxD = x_NxJ.reshape(batch, length, heads, head_dim)
      x_BxLxHxD = constrain(x_BxLxHxD, ('batch', 'length', 'heads', 'kv'))
      return x_BxLxHxD.transpose(0, 2, 1, 3).reshape(batch * heads, length, head_dim)

    q_GxQxD = project('query', inputs_q_BxQxE, q_len, query_init)
    k_GxKxD = project('key', inputs_kv_BxKxE, k_len, self.kernel_init)
    v_GxKxD = project('value', inputs_kv_BxKxE, k_len, self.kernel_init)
    dropout_BxHx1xK = None
    if not deterministic and self.dropout_rate > 0:
      # T5 broadcasts attention dropout over the query axis: one keep mask per (batch, head, key).
      dropout_BxHx1xK = nn.Dropout(self.dropout_rate)(jnp.ones((batch, heads, 1, k_len), jnp.float32),
                                                      deterministic=False)
    position_bias_HxQxK = None if position_bias_1xHxQxK is None else position_bias_1xHxQxK[0]
    context_GxQxD = attention_kernel.dot_product_attention(
        q_GxQxD, k_GxKxD, v_GxKxD, batch, position_bias_HxQxK, mask_bias_Bx1xQxK, dropout_BxHx1xK,
        summed_bias_BxHxQxK)
    context_NxJ = (context_GxQxD.astype(self.dtype).reshape(batch, heads, q_len, head_dim)
                   .transpose(0, 2, 1, 3).reshape(batch * q_len, joined))
    out_NxE = dense(emb_dim, ('joined_kv', 'embed'), kernel_init=self.kernel_init, name='out')(
        context_NxJ, deterministic)
    return constrain(out_NxE.reshape(batch, q_len, emb_dim), ('batch', 'length', 'embed'))


def _activation(name: str) -> Callable[[Array], Array]:
  if name == 'linear':
    return lambda x: x
  fn = getattr(nn, name, None)
  if not callable(fn):
    raise ValueError(f'Unknown MLP activation {name!r}; expected "linear" or a flax.linen function.')
  return fn


class MlpBlock(nn.Module):
  """Gated MLP: product of `activations` applied to `wi_i` projections, then `wo`."""
  intermediate_dim: int
  activations: tuple[str, ...] = ('gelu', 'linear')
  dtype: jnp.dtype = jnp.float32
  intermediate_dropout_rate: float = 0.0
  kernel_init: Initializer = default_kernel_init
  lora: Any = None  # lora.LoraConfig | None

  @nn.compact
  def __call__(self, x_BxLxE: Array, deterministic: bool) -> Array:
    batch, length, emb_dim = x_BxLxE.shape
    x_NxE = x_BxLxE.reshape(batch * length, emb_dim)
    hidden_NxM = None
    for idx, act_name in enumerate(self.activations):
      name = 'wi' if len(self.activations) == 1 else f'wi_{idx}'
      h_NxM = _activation(act_name)(Dense(self.intermediate_dim, ('embed', 'mlp'), dtype=self.dtype,
                                          kernel_init=self.kernel_init, lora=self.lora, name=name)(
                                              x_NxE, deterministic))
      hidden_NxM = h_NxM if hidden_NxM is None else hidden_NxM * h_NxM
    hidden_BxLxM = hidden_NxM.reshape(batch, length, self.intermediate_dim)
    hidden_BxLxM = nn.Dropout(self.intermediate_dropout_rate, broadcast_dims=(-2,))(
        hidden_BxLxM, deterministic=deterministic)
    hidden_BxLxM = constrain(hidden_BxLxM, ('batch', 'length', 'mlp'))
    out_NxE = Dense(emb_dim, ('mlp', 'embed'), dtype=self.dtype, kernel_init=self.kernel_init,
                    lora=self.lora, name='wo')(hidden_BxLxM.reshape(batch * length, self.intermediate_dim),
                                               deterministic)
    return out_NxE.reshape(batch, length, emb_dim)


# ----------------------------- attention masks --------------------------------

def attention_mask(query_valid_BxQ: Array, key_valid_BxK: Array) -> Array:
  """Boolean `(B, 1, Q, K)` mask from per-position validity."""
  return (query_valid_BxQ[:, None, :, None] & key_valid_BxK[:, None, None, :])


def segment_mask(query_segments_BxQ: Array, key_segments_BxK: Array) -> Array:
  """Packed examples may only attend within their own segment."""
  return query_segments_BxQ[:, None, :, None] == key_segments_BxK[:, None, None, :]


def causal_mask(length: int) -> Array:
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def mask_to_bias(mask_Bx1xQxK: Array, dtype: jnp.dtype) -> Array:
  return jnp.where(mask_Bx1xQxK, 0.0, _MASK_VALUE).astype(dtype)


# ----------------------------- decoding (KV cache) -----------------------------

class DecodingAttention(nn.Module):
  """One-token-at-a-time attention with a key/value cache (T5X's `decode=True` path).

  Same parameter names and shapes as `MultiHeadDotProductAttention`, so the
  decoder's trained parameters apply unchanged. Cache variables (collection
  'cache'), batch first so beam search can reorder them:

  - self-attention: `cached_key`/`cached_value` `(N, H, T, D)` for all decoder
    positions of the N = B * K decoded sequences (K beams or samples per input,
    consecutive) and the scalar `cache_index`; `bias_1xHxTxT` is the full
    relative position bias, sliced at the current row here and masked causally.
    The new key/value is written in place (`dynamic_update_slice`).
  - cross-attention (`cross=True`): `cached_key`/`cached_value` `(B, H, L, D)`,
    the projected encoder output, ONE row per input: the K sequences decoded
    from an input are its K query positions (the training layout), so the
    encoder projections run once per input and beam search never copies them.
    Written when `inputs_kv_BxLxE` is given, read when it is None.

  The first call (`init`) sees full-length inputs and only creates the cache.
  """
  num_heads: int
  head_dim: int
  dtype: jnp.dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
  lora: Any = None  # lora.LoraConfig | None

  def _project(self, name: str, x_BxLxE: Array, init: Initializer) -> Array:
    batch, length, emb_dim = x_BxLxE.shape
    x_NxJ = Dense(self.num_heads * self.head_dim, ('embed', 'joined_kv'), dtype=self.dtype,
                  kernel_init=init, lora=self.lora, name=name)(x_BxLxE.reshape(batch * length, emb_dim))
    return x_NxJ.reshape(batch, length, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

  @nn.compact
  def __call__(self, inputs_q_NxQxE: Array, inputs_kv_BxKxE: Array | None, bias: Array,
               cross: bool) -> Array:
    rows, q_len, emb_dim = inputs_q_NxQxE.shape
    depth_scale = np.sqrt(self.head_dim).astype(np.float32)
    q_NxHxQxD = self._project('query', inputs_q_NxQxE, lambda *args: self.kernel_init(*args) / depth_scale)
    initialized = self.has_variable('cache', 'cached_key')
    if cross:
      k_BxHxLxD, v_BxHxLxD = self._cross_cache(inputs_kv_BxKxE, initialized)
      context_NxHxQxD = self._grouped_attention(q_NxHxQxD, k_BxHxLxD, v_BxHxLxD, bias)
    else:
      k_NxHxTxD, v_NxHxTxD, bias_1xHxQxT = self._self_cache(inputs_q_NxQxE, bias, initialized)
      logits_NxHxQxT = jnp.einsum('nhqd,nhkd->nhqk', q_NxHxQxD, k_NxHxTxD, preferred_element_type=jnp.float32)
      weights_NxHxQxT = jax.nn.softmax(logits_NxHxQxT + bias_1xHxQxT.astype(jnp.float32), axis=-1)
      context_NxHxQxD = jnp.einsum('nhqk,nhkd->nhqd', weights_NxHxQxT.astype(self.dtype), v_NxHxTxD,
                                   preferred_element_type=jnp.float32).astype(self.dtype)
    context_NxJ = context_NxHxQxD.transpose(0, 2, 1, 3).reshape(rows * q_len, -1)
    out_NxE = Dense(emb_dim, ('joined_kv', 'embed'), dtype=self.dtype, kernel_init=self.kernel_init,
                    lora=self.lora, name='out')(context_NxJ)
    return out_NxE.reshape(rows, q_len, emb_dim)

  def _grouped_attention(self, q_NxHxQxD: Array, k_BxHxLxD: Array, v_BxHxLxD: Array,
                         mask_bias_Bx1x1xL: Array) -> Array:
    """The N = B * K query rows attend to their input's keys as K * Q query positions."""
    rows, heads, q_len, head_dim = q_NxHxQxD.shape
    batch = k_BxHxLxD.shape[0]
    if rows % batch:
      raise ValueError(f'{rows} decoded sequences are not a multiple of the {batch} cached inputs.')
    per_input = rows // batch
    q_BxHxMxD = (q_NxHxQxD.reshape(batch, per_input, heads, q_len, head_dim).transpose(0, 2, 1, 3, 4)
                 .reshape(batch, heads, per_input * q_len, head_dim))
    logits_BxHxMxL = jnp.einsum('bhmd,bhld->bhml', q_BxHxMxD, k_BxHxLxD, preferred_element_type=jnp.float32)
    weights_BxHxMxL = jax.nn.softmax(logits_BxHxMxL + mask_bias_Bx1x1xL.astype(jnp.float32), axis=-1)
    context_BxHxMxD = jnp.einsum('bhml,bhld->bhmd', weights_BxHxMxL.astype(self.dtype), v_BxHxLxD,
                                 preferred_element_type=jnp.float32).astype(self.dtype)
    return (context_BxHxMxD.reshape(batch, heads, per_input, q_len, head_dim).transpose(0, 2, 1, 3, 4)
            .reshape(rows, heads, q_len, head_dim))

  def _cross_cache(self, inputs_kv_BxLxE: Array | None, initialized: bool):
    if inputs_kv_BxLxE is None:
      if not initialized:
        raise ValueError('Cross-attention decode step without encoder outputs needs an initialized '
                         'cache; pass the encoded inputs on the first step.')
      return self.get_variable('cache', 'cached_key'), self.get_variable('cache', 'cached_value')
    k_BxHxLxD = self._project('key', inputs_kv_BxLxE, self.kernel_init)
    v_BxHxLxD = self._project('value', inputs_kv_BxLxE, self.kernel_init)
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, k_BxHxLxD.shape, self.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, v_BxHxLxD.shape, self.dtype)
    cached_key.value, cached_value.value = k_BxHxLxD, v_BxHxLxD
    return k_BxHxLxD, v_BxHxLxD

  def _self_cache(self, inputs_NxQxE: Array, bias_1xHxTxT: Array, initialized: bool):
    k_NxHxQxD = self._project('key', inputs_NxQxE, self.kernel_init)
    v_NxHxQxD = self._project('value', inputs_NxQxE, self.kernel_init)
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, k_NxHxQxD.shape, self.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, v_NxHxQxD.shape, self.dtype)
    cache_index = self.variable('cache', 'cache_index', lambda: jnp.array(0, dtype=jnp.int32))
    max_len = bias_1xHxTxT.shape[-1]
    if not initialized:  # init: full-length causal attention, shapes only matter.
      causal_bias = mask_to_bias(causal_mask(max_len), bias_1xHxTxT.dtype)
      return k_NxHxQxD, v_NxHxQxD, bias_1xHxTxT + causal_bias
    if inputs_NxQxE.shape[1] != 1:
      raise ValueError(f'Decode steps take one token per sequence, got inputs {inputs_NxQxE.shape}.')
    index = cache_index.value
    zero = jnp.zeros((), jnp.int32)
    cached_key.value = jax.lax.dynamic_update_slice(
        cached_key.value, k_NxHxQxD.astype(self.dtype), (zero, zero, index, zero))
    cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, v_NxHxQxD.astype(self.dtype), (zero, zero, index, zero))
    cache_index.value = index + 1
    bias_1xHx1xT = jax.lax.dynamic_slice_in_dim(bias_1xHxTxT, index, 1, axis=2)
    visible_T = jnp.arange(max_len) <= index
    bias_1xHx1xT = bias_1xHx1xT + jnp.where(visible_T, 0.0, _MASK_VALUE).astype(bias_1xHx1xT.dtype)
    return cached_key.value, cached_value.value, bias_1xHx1xT

"""T5.1.1 encoder-decoder Transformer, parameter-compatible with T5X.

Parameter tree (unscanned), as in `t5x/examples/t5/network.py`:
  token_embedder/embedding                          (vocab, embed)
  encoder/relpos_bias/rel_embedding                 (heads, relpos_buckets)
  encoder/layers_{i}/pre_attention_layer_norm/scale (embed,)
  encoder/layers_{i}/attention/{query,key,value}/kernel  (embed, joined_kv)
  encoder/layers_{i}/attention/out/kernel           (joined_kv, embed)
  encoder/layers_{i}/pre_mlp_layer_norm/scale
  encoder/layers_{i}/mlp/{wi_0,wi_1}/kernel (embed, mlp), mlp/wo/kernel (mlp, embed)
  encoder/encoder_norm/scale
  decoder/layers_{i}/{pre_self_attention_layer_norm, self_attention,
      pre_cross_attention_layer_norm, encoder_decoder_attention, pre_mlp_layer_norm, mlp}
  decoder/relpos_bias/rel_embedding, decoder/decoder_norm/scale,
  decoder/logits_dense/kernel                       (embed, vocab)
With `scan_layers=True` the per-layer subtrees are stacked under
`encoder/layers/...` / `decoder/layers/...` with a leading 'layers' axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flan_t5x import attention_kernel
from flan_t5x import layers
from flan_t5x import prompt_tuning

Array = jax.Array

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'minimal': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5.1.1 encoder-decoder (names as T5X's T5Config)."""
  vocab_size: int
  emb_dim: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  mlp_activations: tuple[str, ...] = ('gelu', 'linear')
  dropout_rate: float = 0.1
  logits_via_embedding: bool = False
  dtype: Any = 'bfloat16'
  scan_layers: bool = False
  remat_policy: str = 'none'
  # Parameter-efficient finetuning (None: off): flan_t5x.lora.LoraConfig adds low-rank adapters
  # to the kernels it targets; flan_t5x.prompt_tuning.PromptTuningConfig prepends a learned prompt.
  lora: Any = None
  prompt_tuning: Any = None

  def __post_init__(self):
    # Gin passes lists; the config must stay hashable.
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'remat_policy={self.remat_policy!r}; expected one of {sorted(REMAT_POLICIES)}.')
    for name in ('vocab_size', 'emb_dim', 'num_heads', 'head_dim', 'mlp_dim'):
      if getattr(self, name) <= 0:
        raise ValueError(f'T5Config.{name} must be positive, got {getattr(self, name)}.')

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


def _maybe_scanned_output(config: T5Config, x: Array):
  return (x, None) if config.scan_layers else x


class EncoderLayer(nn.Module):
  config: T5Config
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxE: Array, mask_bias_Bx1xLxL: Array, position_bias_1xHxLxL: Array,
               summed_bias_BxHxLxL: Array | None = None):
    cfg, dtype = self.config, self.config.activation_dtype
    dropout = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        y, deterministic=self.deterministic)
    h = layers.RMSNorm(dtype=dtype, name='pre_attention_layer_norm')(x_BxLxE)
    h = layers.MultiHeadDotProductAttention(cfg.num_heads, cfg.head_dim, dtype=dtype,
                                            dropout_rate=cfg.dropout_rate, lora=cfg.lora, name='attention')(
        h, h, mask_bias_Bx1xLxL, deterministic=self.deterministic, position_bias_1xHxQxK=position_bias_1xHxLxL,
        summed_bias_BxHxQxK=summed_bias_BxHxLxL)
    x_BxLxE = x_BxLxE + dropout(h)
    h = layers.RMSNorm(dtype=dtype, name='pre_mlp_layer_norm')(x_BxLxE)
    h = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, dtype=dtype,
                        intermediate_dropout_rate=cfg.dropout_rate, lora=cfg.lora, name='mlp')(
        h, deterministic=self.deterministic)
    x_BxLxE = layers.constrain(x_BxLxE + dropout(h), ('batch', 'length', 'embed'))
    return _maybe_scanned_output(cfg, x_BxLxE)


class DecoderLayer(nn.Module):
  """With `decode=True`: one token per call, keys/values from the 'cache' collection."""
  config: T5Config
  deterministic: bool
  decode: bool = False

  @nn.compact
  def __call__(self, y_BxTxE: Array, encoded_BxLxE: Array | None, self_mask_bias_Bx1xTxT: Array | None,
               position_bias_1xHxTxT: Array, cross_bias_Bx1xTxL: Array):
    cfg, dtype = self.config, self.config.activation_dtype
    dropout = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        y, deterministic=self.deterministic)

    def attention(name, q, kv, mask_bias, position_bias, cross):
      if self.decode:  # self-attention: the position bias (causal masking is the cache's); cross: the mask
        return layers.DecodingAttention(cfg.num_heads, cfg.head_dim, dtype=dtype, lora=cfg.lora, name=name)(
            q, kv, mask_bias if cross else position_bias, cross=cross)
      return layers.MultiHeadDotProductAttention(
          cfg.num_heads, cfg.head_dim, dtype=dtype, dropout_rate=cfg.dropout_rate, lora=cfg.lora, name=name)(
              q, kv, mask_bias, deterministic=self.deterministic, position_bias_1xHxQxK=position_bias)

    h = layers.RMSNorm(dtype=dtype, name='pre_self_attention_layer_norm')(y_BxTxE)
    h = attention('self_attention', h, h, self_mask_bias_Bx1xTxT, position_bias_1xHxTxT, cross=False)
    y_BxTxE = y_BxTxE + dropout(h)
    h = layers.RMSNorm(dtype=dtype, name='pre_cross_attention_layer_norm')(y_BxTxE)
    h = attention('encoder_decoder_attention', h, encoded_BxLxE, cross_bias_Bx1xTxL, None, cross=True)
    y_BxTxE = y_BxTxE + dropout(h)
    h = layers.RMSNorm(dtype=dtype, name='pre_mlp_layer_norm')(y_BxTxE)
    h = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, dtype=dtype,
                        intermediate_dropout_rate=cfg.dropout_rate, lora=cfg.lora, name='mlp')(
        h, deterministic=self.deterministic)
    y_BxTxE = layers.constrain(y_BxTxE + dropout(h), ('batch', 'length', 'embed'))
    return _maybe_scanned_output(cfg, y_BxTxE)


def _layer_stack(config: T5Config, layer_cls, num_layers: int, num_broadcast_args: int,
                 deterministic: bool, **layer_kwargs):
  """Returns a callable x -> x applying `num_layers` layers (scanned or unrolled)."""
  policy = REMAT_POLICIES[config.remat_policy]
  if config.remat_policy != 'none':
    layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not config.scan_layers)
  if config.scan_layers:
    scanned = nn.scan(layer_cls, variable_axes={'params': 0, 'cache': 0}, split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * num_broadcast_args, length=num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
    stack = scanned(config=config, deterministic=deterministic, name='layers', **layer_kwargs)
    return lambda x, *args: stack(x, *args)[0]
  stack = [layer_cls(config=config, deterministic=deterministic, name=f'layers_{i}', **layer_kwargs)
           for i in range(num_layers)]

  def apply(x, *args):
    for layer in stack:
      x = layer(x, *args)
    return x
  return apply


class Encoder(nn.Module):
  config: T5Config
  deterministic: bool

  @nn.compact
  def __call__(self, embedded_BxLxE: Array, mask_Bx1xLxL: Array) -> Array:
    cfg, dtype = self.config, self.config.activation_dtype
    length = embedded_BxLxE.shape[1]
    position_bias_1xHxLxL = layers.RelativePositionBiases(cfg.num_heads, dtype=dtype, name='relpos_bias')(
        length, length, bidirectional=True)
    mask_bias_Bx1xLxL = layers.mask_to_bias(mask_Bx1xLxL, dtype)
    # On CPU their (B, H, L, L) sum, built once for all layers (attention_kernel.summed_attention_bias).
    summed_bias_BxHxLxL = attention_kernel.summed_attention_bias(position_bias_1xHxLxL[0], mask_bias_Bx1xLxL)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(embedded_BxLxE, deterministic=self.deterministic)
    x = layers.constrain(x.astype(dtype), ('batch', 'length', 'embed'))
    x = _layer_stack(cfg, EncoderLayer, cfg.num_encoder_layers, 3, self.deterministic)(
        x, mask_bias_Bx1xLxL, position_bias_1xHxLxL, summed_bias_BxHxLxL)
    x = layers.RMSNorm(dtype=dtype, name='encoder_norm')(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)


class Decoder(nn.Module):
  """With `decode=True`, `self_mask_Bx1xTxT` is unused: attention is causal over the cache of
  `max_decode_length` positions, whose relative position bias is computed here."""
  config: T5Config
  deterministic: bool
  decode: bool = False

  @nn.compact
  def __call__(self, embedded_BxTxE: Array, encoded_BxLxE: Array | None, self_mask_Bx1xTxT: Array | None,
               cross_mask_Bx1xTxL: Array, embedding_VxE: Array | None = None,
               max_decode_length: int | None = None, return_hidden: bool = False) -> Array:
    cfg, dtype = self.config, self.config.activation_dtype
    batch, target_len, emb_dim = embedded_BxTxE.shape
    bias_len = max_decode_length if self.decode else target_len
    if bias_len is None:
      raise ValueError('Decoder(decode=True) needs max_decode_length.')
    position_bias_1xHxTxT = layers.RelativePositionBiases(cfg.num_heads, dtype=dtype, name='relpos_bias')(
        bias_len, bias_len, bidirectional=False)
    self_mask_bias = None if self.decode else layers.mask_to_bias(self_mask_Bx1xTxT, dtype)
    cross_bias = layers.mask_to_bias(cross_mask_Bx1xTxL, dtype)
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(embedded_BxTxE, deterministic=self.deterministic)
    y = layers.constrain(y.astype(dtype), ('batch', 'length', 'embed'))
    y = _layer_stack(cfg, DecoderLayer, cfg.num_decoder_layers, 4, self.deterministic,
                     decode=self.decode)(
        y, encoded_BxLxE, self_mask_bias, position_bias_1xHxTxT, cross_bias)
    y = layers.RMSNorm(dtype=dtype, name='decoder_norm')(y)
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=self.deterministic)
    if return_hidden:  # the loss applies logits_dense itself, in vocabulary chunks
      return y
    y_NxE = y.reshape(batch * target_len, emb_dim)
    if cfg.logits_via_embedding:
      # Tied embeddings need rescaling to keep logits O(1) (T5X convention).
      logits_NxV = jnp.dot(y_NxE.astype(jnp.float32), embedding_VxE.astype(jnp.float32).T)
      logits_NxV = logits_NxV / jnp.sqrt(emb_dim)
    else:
      logits_NxV = layers.Dense(cfg.vocab_size, ('embed', 'vocab'), dtype=jnp.float32, lora=cfg.lora,
                                name='logits_dense')(y_NxE, self.deterministic)
    return layers.constrain(logits_NxV.reshape(batch, target_len, cfg.vocab_size),
                            ('batch', 'length', 'vocab'))


def encoder_mask(encoder_tokens_BxL: Array, encoder_segment_ids_BxL: Array | None) -> Array:
  valid = encoder_tokens_BxL > 0
  mask = layers.attention_mask(valid, valid)
  if encoder_segment_ids_BxL is not None:
    mask &= layers.segment_mask(encoder_segment_ids_BxL, encoder_segment_ids_BxL)
  return mask


def decoder_masks(decoder_target_tokens_BxT: Array, encoder_tokens_BxL: Array,
                  decoder_segment_ids_BxT: Array | None, encoder_segment_ids_BxL: Array | None):
  """(self-attention mask, encoder-decoder mask), as T5X's make_decoder_mask."""
  target_valid = decoder_target_tokens_BxT > 0
  self_mask = layers.attention_mask(target_valid, target_valid) & layers.causal_mask(target_valid.shape[1])
  cross_mask = layers.attention_mask(target_valid, encoder_tokens_BxL > 0)
  if decoder_segment_ids_BxT is not None:
    self_mask &= layers.segment_mask(decoder_segment_ids_BxT, decoder_segment_ids_BxT)
    cross_mask &= layers.segment_mask(decoder_segment_ids_BxT, encoder_segment_ids_BxL)
  return self_mask, cross_mask


class Prompt(nn.Module):
  """The learned prompt `(N, embed)` of prompt tuning (float32, logical axes prompt_length x embed)."""
  config: T5Config

  @nn.compact
  def __call__(self, embedding_VxE: Array) -> Array:
    # The table is read only at init ('vocab' initialisation samples its rows).
    pt = self.config.prompt_tuning

    def init(key, shape, dtype=jnp.float32):
      del shape, dtype
      table = nn.meta.unbox(embedding_VxE)
      return prompt_tuning.init_prompt(key, pt, table)
    return layers.logical_param(self, 'prompt', init, (pt.length, self.config.emb_dim),
                                (prompt_tuning.PROMPT_AXIS, 'embed'))


class Transformer(nn.Module):
  """T5.1.1 encoder-decoder returning float32 logits `(batch, target_len, vocab)`.

  `encode` and `decode` are the inference entry points (`module.apply(..., method=...)`):
  `decode` runs the decoder one token per sequence with a key/value cache
  (mutable collection 'cache'); see `flan_t5x.decoding`.
  """
  config: T5Config

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None, enable_dropout: bool = True) -> Array:
    return self._run('train', encoder_input_tokens=encoder_input_tokens,
                     decoder_input_tokens=decoder_input_tokens, decoder_target_tokens=decoder_target_tokens,
                     encoder_segment_ids=encoder_segment_ids, decoder_segment_ids=decoder_segment_ids,
                     enable_dropout=enable_dropout)

  def hidden_states(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                    decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
                    decoder_segment_ids: Array | None = None, enable_dropout: bool = True) -> Array:
    """As `__call__`, but the decoder output `(batch, target_len, embed)` before `logits_dense`."""
    return self._run('hidden', encoder_input_tokens=encoder_input_tokens,
                     decoder_input_tokens=decoder_input_tokens, decoder_target_tokens=decoder_target_tokens,
                     encoder_segment_ids=encoder_segment_ids, decoder_segment_ids=decoder_segment_ids,
                     enable_dropout=enable_dropout)

  def encode(self, encoder_input_tokens: Array, enable_dropout: bool = False) -> Array:
    """Encoder outputs `(batch, input_len, embed)` of an unpacked batch."""
    return self._run('encode', encoder_input_tokens=encoder_input_tokens, enable_dropout=enable_dropout)

  def decode(self, encoded: Array | None, encoder_input_tokens: Array, decoder_input_tokens: Array,
             max_decode_length: int) -> Array:
    """Logits `(batch, 1, vocab)` for one decoder step (T5X decode mode).

    `encoded` is given on the first step (and at cache init), which stores the
    encoder-decoder attention keys/values in the cache; later steps pass None.
    `encoder_input_tokens` and `encoded` have one row per input (B); `decoder_input_tokens`
    one per decoded sequence (N = B * K: K beams or samples per input, consecutive).
    At cache init `decoder_input_tokens` is `(N, max_decode_length)`.
    """
    return self._run('decode', encoded=encoded, encoder_input_tokens=encoder_input_tokens,
                     decoder_input_tokens=decoder_input_tokens, max_decode_length=max_decode_length,
                     enable_dropout=False)

  @nn.compact
  def _run(self, mode: str, encoder_input_tokens: Array, decoder_input_tokens: Array | None = None,
           decoder_target_tokens: Array | None = None, encoder_segment_ids: Array | None = None,
           decoder_segment_ids: Array | None = None, enable_dropout: bool = True,
           encoded: Array | None = None, max_decode_length: int | None = None) -> Array:
    if (encoder_segment_ids is None) != (decoder_segment_ids is None):
      raise ValueError('Packed batches need both encoder_segment_ids and decoder_segment_ids.')
    cfg, dtype = self.config, self.config.activation_dtype
    deterministic = not enable_dropout
    embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=dtype, name='token_embedder')
    embedded_inputs = None if mode == 'decode' else embedder(encoder_input_tokens.astype(jnp.int32))
    if cfg.prompt_tuning is not None:
      if encoder_segment_ids is not None:
        raise ValueError('Prompt tuning needs unpacked batches (one prompt per row); set pack = False '
                         'in the data configuration (gin/runs/prompt_tuning.gin does).')
      if embedded_inputs is not None:  # decode steps reuse the encoder output (prompt included)
        prompt_NxE = Prompt(cfg, name='prompt')(embedder.variables['params']['embedding'])
        embedded_inputs = prompt_tuning.prepend(prompt_NxE, embedded_inputs)
      # Masks see the prompt positions as real tokens.
      encoder_input_tokens = prompt_tuning.with_prompt_tokens(encoder_input_tokens, cfg.prompt_tuning)
    if mode != 'decode':
      enc_mask = encoder_mask(encoder_input_tokens, encoder_segment_ids)
      encoded = Encoder(cfg, deterministic, name='encoder')(embedded_inputs, enc_mask)
      if mode == 'encode':
        return encoded
    embedding_VxE = embedder.variables['params']['embedding'] if cfg.logits_via_embedding else None
    if embedding_VxE is not None:
      embedding_VxE = nn.meta.unbox(embedding_VxE)
    decoder_tokens = decoder_input_tokens.astype(jnp.int32)
    if mode == 'decode':  # one mask row per input: the cross-attention cache is per input, not per decode
      cross_mask = (encoder_input_tokens > 0)[:, None, None, :]
      return Decoder(cfg, True, decode=True, name='decoder')(
          embedder(decoder_tokens), encoded, None, cross_mask, embedding_VxE,
          max_decode_length=max_decode_length)
    self_mask, cross_mask = decoder_masks(decoder_target_tokens, encoder_input_tokens,
                                          decoder_segment_ids, encoder_segment_ids)
    return Decoder(cfg, deterministic, name='decoder')(
        embedder(decoder_tokens), encoded, self_mask, cross_mask, embedding_VxE,
        return_hidden=mode == 'hidden')

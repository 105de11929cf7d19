"""EncoderDecoderModel: the Transformer module plus loss, metrics and init (T5X API)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import seqio

from flan_t5x import decoding
from flan_t5x import losses
from flan_t5x import network
from flan_t5x import vocab_chunked_loss

Array = jax.Array
PyTree = Any

REQUIRED_FEATURES = ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens')
PACKING_FEATURES = ('encoder_segment_ids', 'decoder_segment_ids')


def _check_batch(batch: Mapping[str, Array]) -> None:
  missing = [k for k in REQUIRED_FEATURES if k not in batch]
  if missing:
    raise ValueError(f'Batch lacks features {missing}; got {sorted(batch)}. Expected the output of '
                     'seqio.EncDecFeatureConverter.')


class EncoderDecoderModel:
  """Wraps a `network.Transformer`; loss as T5X's EncoderDecoderModel.loss_fn."""

  FEATURE_CONVERTER_CLS = seqio.EncDecFeatureConverter

  def __init__(self, module: network.Transformer, input_vocabulary: seqio.Vocabulary | None = None,
               output_vocabulary: seqio.Vocabulary | None = None, optimizer_def: Any = None,
               decode_fn: Callable[..., decoding.DecodingConfig] = decoding.t5x_beam_search,
               feature_converter_cls: type[seqio.FeatureConverter] | None = None,
               z_loss: float = 1e-4, label_smoothing: float = 0.0,
               loss_normalizing_factor: float | str | None = None, loss_vocab_chunk_width: int | None = 4096):
    """`decode_fn`: how predictions are decoded unless the job is given a DecodingConfig, as T5X's
    (`decoding.beam_search`, T5X's default, or `decoding.temperature_sample`; see
    flan_t5x.decoding.t5x_beam_search). `feature_converter_cls`: T5X's; only
    seqio.EncDecFeatureConverter (the default) or a subclass of it.

    `loss_vocab_chunk_width`: the training loss computes `logits_dense` and its softmax statistics
    in vocabulary chunks of at most this many columns (flan_t5x.vocab_chunked_loss), so the full
    logits never exist; None computes full logits (as T5X). Tied embeddings
    (`logits_via_embedding`) and a LoRA adapter on `logits_dense` always take full logits."""
    if feature_converter_cls is not None and not (
        isinstance(feature_converter_cls, type) and issubclass(feature_converter_cls, seqio.EncDecFeatureConverter)):
      raise ValueError(f'EncoderDecoderModel.feature_converter_cls = {feature_converter_cls!r}: an encoder-decoder '
                       'model takes seqio.EncDecFeatureConverter or a subclass of it.')
    if feature_converter_cls is not None:
      self.FEATURE_CONVERTER_CLS = feature_converter_cls
    self.decode_fn = decode_fn
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing}.')
    if loss_vocab_chunk_width is not None and loss_vocab_chunk_width <= 0:
      raise ValueError(f'loss_vocab_chunk_width must be positive or None, got {loss_vocab_chunk_width}.')
    self.loss_vocab_chunk_width = loss_vocab_chunk_width
    self.module = module
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary
    self.optimizer_def = optimizer_def
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing
    self.loss_normalizing_factor = losses.parse_loss_normalizing_factor(loss_normalizing_factor)

  @property
  def config(self) -> network.T5Config:
    return self.module.config

  def with_config(self, config: network.T5Config) -> 'EncoderDecoderModel':
    """This model (vocabularies, optimizer, loss settings) around a Transformer of `config`."""
    model = copy.copy(self)
    model.module = network.Transformer(config)
    return model

  def feature_converter(self, pack: bool) -> seqio.FeatureConverter:
    return self.FEATURE_CONVERTER_CLS(pack=pack)

  def init_params(self, rng: Array, batch_size: int, input_length: int, target_length: int) -> PyTree:
    """Returns the boxed (LogicallyPartitioned) parameter tree."""
    enc = jnp.ones((batch_size, input_length), jnp.int32)
    dec = jnp.ones((batch_size, target_length), jnp.int32)
    variables = self.module.init({'params': rng, 'dropout': rng}, enc, dec, dec, enable_dropout=False)
    return variables['params']

  def compute_logits(self, params: PyTree, batch: Mapping[str, Array], dropout_rng: Array | None) -> Array:
    return self._apply(params, batch, dropout_rng, method=None)

  def _apply(self, params: PyTree, batch: Mapping[str, Array], dropout_rng: Array | None, method):
    _check_batch(batch)
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    return self.module.apply(
        {'params': params}, batch['encoder_input_tokens'], batch['decoder_input_tokens'],
        batch['decoder_target_tokens'], encoder_segment_ids=batch.get('encoder_segment_ids'),
        decoder_segment_ids=batch.get('decoder_segment_ids'), enable_dropout=dropout_rng is not None,
        rngs=rngs, method=method)

  def uses_vocab_chunked_loss(self) -> bool:
    cfg = self.config
    return (self.loss_vocab_chunk_width is not None and not cfg.logits_via_embedding
            and not (cfg.lora is not None and cfg.lora.applies_to(('decoder', 'logits_dense'))))

  def logit_statistics(self, params: PyTree, batch: Mapping[str, Array], dropout_rng: Array | None
                       ) -> vocab_chunked_loss.LogitStatistics:
    """Per-token (flattened batch x targets) log Z, target logit, mean and max logit."""
    targets_N = batch['decoder_target_tokens'].reshape(-1)
    if not self.uses_vocab_chunked_loss():
      logits_BxTxV = self.compute_logits(params, batch, dropout_rng)
      return vocab_chunked_loss.plain_logit_statistics(
          logits_BxTxV.reshape(targets_N.shape[0], -1), targets_N)
    hidden_BxTxE = self._apply(params, batch, dropout_rng, method=self.module.hidden_states)
    kernel_ExV = nn.meta.unbox(params['decoder']['logits_dense']['kernel'])
    # logits_dense runs in float32 (layers.Dense(dtype=float32) in the full-logits path).
    hidden_NxE = hidden_BxTxE.reshape(targets_N.shape[0], -1).astype(jnp.float32)
    return vocab_chunked_loss.logit_statistics(hidden_NxE, kernel_ExV, targets_N, self.loss_vocab_chunk_width)

  def normalizing_factor_and_weights(self, batch: Mapping[str, Array]):
    return losses.normalizing_factor_and_weights(self.loss_normalizing_factor, batch)

  def loss_fn(self, params: PyTree, batch: Mapping[str, Array], dropout_rng: Array | None,
              normalization: tuple[Any, Array] | None = None):
    """Returns (loss, metric sums). Dropout is off when `dropout_rng` is None.

    `normalization` = (factor, per-token loss weights) overrides the values
    derived from `batch`; gradient accumulation passes the full batch's so that
    summed microbatch gradients equal the full-batch gradient.
    """
    stats = self.logit_statistics(params, batch, dropout_rng)
    if normalization is None:
      normalization = self.normalizing_factor_and_weights(batch)
    loss_normalizing_factor, weights_BxT = normalization
    targets_BxT = batch['decoder_target_tokens']
    loss, z_loss, nll_BxT = losses.cross_entropy_from_statistics(
        stats, self.config.vocab_size, targets_BxT.shape, weights_BxT, self.label_smoothing, self.z_loss,
        loss_normalizing_factor)
    real_BxT = jnp.asarray(batch.get('decoder_loss_weights', targets_BxT > 0), jnp.float32)
    # T5X's accuracy: argmax == target, the argmax being the first index of the maximum (a tie is
    # correct only when the target is the lowest tied id; all-equal logits predict padding).
    correct_BxT = (stats.argmax_N == targets_BxT.reshape(-1)).reshape(targets_BxT.shape).astype(jnp.float32)
    metrics = {
        'loss': loss,
        'z_loss': z_loss,
        'cross_ent_sum': jnp.sum(nll_BxT * real_BxT),
        'correct_tokens': jnp.sum(correct_BxT * real_BxT),
        'num_tokens': jnp.sum(real_BxT),
    }
    return loss, metrics

  def score_batch(self, params: PyTree, batch: Mapping[str, Array]) -> Array:
    """Per-sequence target log-likelihood of an unpacked batch, shape (batch,)."""
    if any(k in batch for k in PACKING_FEATURES):
      raise ValueError('score_batch expects an unpacked batch (no segment ids).')
    logits_BxTxV = self.compute_logits(params, batch, dropout_rng=None)
    log_probs_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    targets_BxT = batch['decoder_target_tokens']
    token_ll_BxT = jnp.take_along_axis(log_probs_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    weights_BxT = jnp.asarray(batch.get('decoder_loss_weights', targets_BxT > 0), jnp.float32)
    return jnp.sum(token_ll_BxT * weights_BxT, axis=-1)


  def decoding_config(self, num_decodes: int = 1) -> decoding.DecodingConfig:
    """The DecodingConfig of `decode_fn` for `num_decodes` sequences per input (T5X's predict_batch_with_aux)."""
    config = self.decode_fn(num_decodes=num_decodes)
    if not isinstance(config, decoding.DecodingConfig):
      raise ValueError(f'EncoderDecoderModel.decode_fn = {self.decode_fn!r}: flan_t5x decodes with '
                       '@decoding.beam_search or @decoding.temperature_sample (or a DecodingConfig given to '
                       'the job).')
    return config

  def predict_batch_with_aux(self, params: PyTree, batch: Mapping[str, Array], rng: Array | None = None,
                             decoder_params: Mapping[str, Any] | None = None, return_all_decodes: bool = False,
                             num_decodes: int = 1, prompt_with_targets: bool = False
                             ) -> tuple[Array, dict[str, Array]]:
    """T5X's predict_batch_with_aux on one device: decodes (batch, max target length) with `decode_fn`.

    As T5X: all decodes (batch, num_decodes, length) in increasing order of score with
    `return_all_decodes`, else the best (batch, length); {'scores': ...} alongside. `decoder_params`
    may carry only 'decode_rng' (T5X's other decoder parameters are the decode_fn's gin bindings).
    """
    if prompt_with_targets:
      raise ValueError('predict_batch_with_aux(prompt_with_targets=True) is not supported by flan_t5x.')
    extra = set(decoder_params or {}) - {'decode_rng'}
    if extra:
      raise ValueError(f'predict_batch_with_aux: decoder_params {sorted(extra)} are not supported; bind them on '
                       'the decode_fn (e.g. decoding.beam_search.alpha).')
    rng = (decoder_params or {}).get('decode_rng', rng)
    tokens_BxKxT, scores_BxK = decoding.predict_batch(
        self.module, params, batch['encoder_input_tokens'], batch['decoder_input_tokens'].shape[1],
        self.decoding_config(num_decodes), rng)
    if return_all_decodes:  # T5X's order: best last
      return tokens_BxKxT[:, ::-1], {'scores': scores_BxK[:, ::-1]}
    return tokens_BxKxT[:, 0], {'scores': scores_BxK[:, 0]}


def summarize_metrics(metric_sums: Mapping[str, Any]) -> dict[str, float]:
  """Turns summed metrics into reported values (per-token loss, accuracy)."""
  num_tokens = max(float(metric_sums['num_tokens']), 1.0)
  return {
      'loss': float(metric_sums['loss']),
      'z_loss': float(metric_sums['z_loss']),
      'cross_ent_loss_per_token': float(metric_sums['cross_ent_sum']) / num_tokens,
      'accuracy': float(metric_sums['correct_tokens']) / num_tokens,
      'num_tokens': float(metric_sums['num_tokens']),
  }


def unbox(tree: PyTree) -> PyTree:
  return nn.meta.unbox(tree)

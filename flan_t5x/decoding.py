"""Autoregressive decoding with a key/value cache: greedy, sampling, beam search (as T5X).

The encoder runs once; the decoder then runs one token per sequence per step
inside a compiled `lax.while_loop` that stops when every sequence has emitted
EOS (id 1) or `max_decode_length` tokens. The first decoder step also stores
the encoder-decoder attention keys/values in the cache.

Everything here is jit-able with static `max_decode_length`/`num_decodes`/
method options; `predict_batch` is the one call the eval and infer jobs use.

Shape suffixes: B batch, K beams (or decodes), T decode length, L input length,
V vocab, E embed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PyTree = Any

EOS_ID = 1
PAD_ID = 0
NEG_INF = -1.0e7
METHODS = ('greedy', 'sample', 'beam')


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
  """How to decode (names as T5X's decode options).

  method: 'greedy', 'sample' (temperature with optional top-k / top-p) or 'beam'.
  num_decodes: samples or beams returned per input, best first.
  alpha: beam search brevity penalty exponent, ((5 + length) / 6) ** alpha.
  """
  method: str = 'greedy'
  num_decodes: int = 1
  temperature: float = 1.0
  topk: int = 0
  topp: float = 1.0
  alpha: float = 0.6

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'DecodingConfig.method={self.method!r}; expected one of {METHODS}.')
    if self.num_decodes < 1:
      raise ValueError(f'DecodingConfig.num_decodes must be >= 1, got {self.num_decodes}.')
    if self.method == 'greedy' and self.num_decodes != 1:
      raise ValueError('Greedy decoding returns one decode; use method="sample" or "beam" for more.')
    if self.temperature < 0 or self.topk < 0 or not 0.0 < self.topp <= 1.0:
      raise ValueError(f'Expected temperature >= 0, topk >= 0 and 0 < topp <= 1; got {self}.')


# ------------------------------------------------ T5X's decode functions

# T5X's EncoderDecoderModel takes `decode_fn` (default `decoding.beam_search`) and calls it with
# `predict_batch_with_aux`'s `num_decodes` (default 1). Under flan_t5x, gin's
# `decode_fn = @decoding.beam_search` names one of these, which turn T5X's parameters (and their
# gin bindings) into the DecodingConfig flan_t5x decodes with.

def t5x_beam_search(num_decodes: int = 4, alpha: float = 0.6) -> DecodingConfig:
  """T5X's `decoding.beam_search`: `num_decodes` beams, brevity penalty `alpha` (one beam by default
  under EncoderDecoderModel, which is not greedy: a beam that ends competes with the live one)."""
  return DecodingConfig('beam', num_decodes, alpha=alpha)


def t5x_temperature_sample(num_decodes: int = 1, temperature: float = 1.0, topk: int = 1,
                           topp: float = 0.0) -> DecodingConfig:
  """T5X's `decoding.temperature_sample` with T5X's defaults: topk=1 (argmax), topp=0.0 (off);
  at most one of them non-zero, as T5X requires. Argmax (topk=1 or temperature 0) is greedy."""
  if topk and topp:
    raise ValueError(f'decoding.temperature_sample: topk={topk} and topp={topp}; at most one of `topp` or '
                     '`topk` may be non-zero (as T5X). Set topk = 0 to sample with topp.')
  if (topk == 1 or temperature == 0) and num_decodes == 1:
    return DecodingConfig('greedy')
  return DecodingConfig('sample', num_decodes, temperature=temperature, topk=topk, topp=topp or 1.0)


# ----------------------------------------------------------------- model steps

def init_cache(module, batch_size: int, input_length: int, max_decode_length: int,
               decodes_per_input: int = 1) -> PyTree:
  """Zero cache for `batch_size` inputs decoded `decodes_per_input` times each (shapes from an
  abstract `init` of the decode path): self-attention entries per decoded sequence, cross-attention
  entries per input."""
  cfg = module.config
  # A prompt-tuned encoder's output has the prompt positions first.
  encoded_length = input_length + (cfg.prompt_tuning.length if cfg.prompt_tuning is not None else 0)

  def init():
    encoded = jnp.zeros((batch_size, encoded_length, cfg.emb_dim), cfg.activation_dtype)
    return module.init(jax.random.PRNGKey(0), encoded, jnp.ones((batch_size, input_length), jnp.int32),
                       jnp.zeros((batch_size * decodes_per_input, max_decode_length), jnp.int32),
                       max_decode_length,
                       method=module.decode)['cache']
  shapes = jax.eval_shape(init)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def make_step_fn(module, params: PyTree, encoder_input_tokens_BxL: Array, max_decode_length: int):
  """(tokens_Nx1, cache, encoded or None) -> (logits_NxV float32, new cache); N = B * decodes."""
  def step(tokens_Nx1, cache, encoded_BxLxE=None):
    logits_Nx1xV, mutated = module.apply(
        {'params': params, 'cache': cache}, encoded_BxLxE, encoder_input_tokens_BxL, tokens_Nx1,
        max_decode_length, method=module.decode, mutable=['cache'])
    return logits_Nx1xV[:, 0].astype(jnp.float32), mutated['cache']
  return step


def _repeat_rows(x: Array, times: int) -> Array:
  """(B, ...) -> (B*times, ...) with each row repeated `times` consecutively."""
  return jnp.repeat(x, times, axis=0) if times > 1 else x


def _start(module, params, encoder_input_tokens_BxL: Array, max_decode_length: int, times: int):
  """Encodes once, runs the first decoder step for `times` decodes per input; (step, logits, cache).

  Nothing of the encoder side is repeated per decode: the cross-attention cache has one row per
  input (see layers.DecodingAttention).
  """
  encoded_BxLxE = module.apply({'params': params}, encoder_input_tokens_BxL, method=module.encode)
  batch, input_length = encoder_input_tokens_BxL.shape
  cache = init_cache(module, batch, input_length, max_decode_length, times)
  step = make_step_fn(module, params, encoder_input_tokens_BxL, max_decode_length)
  logits_NxV, cache = step(jnp.full((batch * times, 1), PAD_ID, jnp.int32), cache, encoded_BxLxE)
  return step, logits_NxV, cache


# --------------------------------------------------------- greedy and sampling

def _filter_logits(logits_BxV: Array, topk: int, topp: float) -> Array:
  if topk:
    kth_B1 = jax.lax.top_k(logits_BxV, topk)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_B1, NEG_INF, logits_BxV)
  if topp < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cumulative_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches topp (always at least the best token).
    cut_B = jnp.sum(cumulative_BxV < topp, axis=-1, keepdims=True)
    threshold_B1 = jnp.take_along_axis(sorted_BxV, jnp.minimum(cut_B, logits_BxV.shape[-1] - 1), axis=-1)
    logits_BxV = jnp.where(logits_BxV < threshold_B1, NEG_INF, logits_BxV)
  return logits_BxV


def argmax_last_axis(logits_BxV: Array) -> Array:
  """jnp.argmax over the vocabulary (first index of the maximum), as two plain reductions: XLA:CPU's
  argmax (one variadic reduce) took 4x longer per decode step at batch 16 x 32128."""
  max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
  vocab = logits_BxV.shape[-1]
  index_V = jnp.arange(vocab, dtype=jnp.int32)
  first_B = jnp.min(jnp.where(logits_BxV == max_Bx1, index_V, vocab), axis=-1)
  return jnp.minimum(first_B, vocab - 1)  # a NaN row matches nowhere; stay a valid token id


def _choose(logits_BxV: Array, rng: Array, temperature: float, topk: int, topp: float) -> Array:
  if temperature == 0.0 or topk == 1:
    return argmax_last_axis(logits_BxV)
  filtered_BxV = _filter_logits(logits_BxV, topk, topp)
  return jax.random.categorical(rng, filtered_BxV / temperature, axis=-1).astype(jnp.int32)


def temperature_sample(step_fn: Callable, logits_BxV: Array, cache: PyTree, max_decode_length: int,
                       rng: Array | None = None, temperature: float = 0.0, topk: int = 0,
                       topp: float = 1.0) -> tuple[Array, Array]:
  """Samples until all rows emitted EOS or `max_decode_length`; (tokens_BxT, log_probs_B).

  `logits_BxV` are the first step's logits. Temperature 0 (or topk 1) is greedy.
  The returned log-probabilities are the model's (unscaled by temperature).
  Tokens after EOS are PAD (0).
  """
  batch = logits_BxV.shape[0]
  rng = jax.random.PRNGKey(0) if rng is None else rng

  def cond(state):
    index, done_B = state[0], state[1]
    return (index < max_decode_length) & ~jnp.all(done_B)

  def body(state):
    index, done_B, tokens_BxT, log_prob_B, logits_BxV, cache, rng = state
    rng, step_rng = jax.random.split(rng)
    next_B = jnp.where(done_B, PAD_ID, _choose(logits_BxV, step_rng, temperature, topk, topp))
    token_lp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV), next_B[:, None], axis=-1)[:, 0]
    log_prob_B = log_prob_B + jnp.where(done_B, 0.0, token_lp_B)
    tokens_BxT = jax.lax.dynamic_update_slice_in_dim(tokens_BxT, next_B[:, None], index, axis=1)
    done_B = done_B | (next_B == EOS_ID)
    logits_BxV, cache = step_fn(next_B[:, None], cache)
    return index + 1, done_B, tokens_BxT, log_prob_B, logits_BxV, cache, rng

  state = (jnp.array(0, jnp.int32), jnp.zeros((batch,), bool),
           jnp.zeros((batch, max_decode_length), jnp.int32), jnp.zeros((batch,), jnp.float32),
           logits_BxV, cache, rng)
  state = jax.lax.while_loop(cond, body, state)
  return state[2], state[3]


# ----------------------------------------------------------------- beam search

def brevity_penalty(alpha: float, length: Array) -> Array:
  """T5X / GNMT length penalty ((5 + length) / 6) ** alpha."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def _gather_beams(x_BxKx: Array, beam_idx_BxM: Array) -> Array:
  return jnp.take_along_axis(x_BxKx, beam_idx_BxM.reshape(beam_idx_BxM.shape + (1,) * (x_BxKx.ndim - 2)),
                             axis=1)


def _reorder_cache(cache: PyTree, flat_idx_N: Array, batch_axis: int) -> PyTree:
  """Moves each beam's self-attention keys/values to its new slot. The cross-attention cache is
  per input, shared by the input's beams (parents are always beams of the same input): untouched."""
  def take(path, x):
    key = jax.tree_util.keystr(path)
    if key.endswith("['cache_index']") or "['encoder_decoder_attention']" in key:
      return x
    return jnp.take(x, flat_idx_N, axis=batch_axis)
  return jax.tree_util.tree_map_with_path(take, cache)


def beam_search(step_fn: Callable, logits_NxV: Array, cache: PyTree, batch_size: int, beam_size: int,
                max_decode_length: int, alpha: float = 0.6, cache_batch_axis: int = 0
                ) -> tuple[Array, Array]:
  """T5X-style beam search; returns (tokens_BxKxT, scores_BxK) best first.

  `logits_NxV` (N = batch * beams, beams of a row consecutive) are the first
  step's logits. A finished beam's score is its log-probability divided by
  `brevity_penalty(alpha, length incl. EOS)`; rows without any finished beam
  return their live beams scored the same way at full length.
  """
  B, K, T = batch_size, beam_size, max_decode_length
  vocab = logits_NxV.shape[-1]
  live_lp_BxK = jnp.tile(jnp.array([0.0] + [NEG_INF] * (K - 1), jnp.float32), (B, 1))
  state = dict(
      index=jnp.array(0, jnp.int32), live_seqs=jnp.zeros((B, K, T), jnp.int32), live_lp=live_lp_BxK,
      finished_seqs=jnp.zeros((B, K, T), jnp.int32), finished_scores=jnp.full((B, K), NEG_INF),
      finished_flags=jnp.zeros((B, K), bool), logits=logits_NxV, cache=cache)

  def cond(s):
    # T5X: stop when no live beam can still beat the worst finished beam of a full row.
    best_live_B = s['live_lp'][:, 0] / brevity_penalty(alpha, T)
    worst_finished_B = jnp.min(jnp.where(s['finished_flags'], s['finished_scores'], NEG_INF * 10), axis=1)
    row_done_B = jnp.all(s['finished_flags'], axis=1) & (worst_finished_B > best_live_B)
    return (s['index'] < T) & ~jnp.all(row_done_B)

  def body(s):
    index = s['index']
    log_probs_BxKxV = jax.nn.log_softmax(s['logits']).reshape(B, K, vocab)
    candidate_lp_BxKV = (s['live_lp'][:, :, None] + log_probs_BxKxV).reshape(B, K * vocab)
    top_lp_Bx2K, top_idx_Bx2K = jax.lax.top_k(candidate_lp_BxKV, 2 * K)
    top_beam_Bx2K, top_token_Bx2K = top_idx_Bx2K // vocab, (top_idx_Bx2K % vocab).astype(jnp.int32)
    top_seqs_Bx2KxT = jax.lax.dynamic_update_slice_in_dim(
        _gather_beams(s['live_seqs'], top_beam_Bx2K), top_token_Bx2K[:, :, None], index, axis=2)
    is_eos_Bx2K = top_token_Bx2K == EOS_ID

    # Live: the best K candidates that did not just end.
    live_lp_Bx2K = jnp.where(is_eos_Bx2K, NEG_INF, top_lp_Bx2K)
    new_live_lp_BxK, live_pick_BxK = jax.lax.top_k(live_lp_Bx2K, K)
    new_live_seqs = _gather_beams(top_seqs_Bx2KxT, live_pick_BxK)
    parent_BxK = jnp.take_along_axis(top_beam_Bx2K, live_pick_BxK, axis=1)
    next_tokens_BxK = jnp.take_along_axis(top_token_Bx2K, live_pick_BxK, axis=1)

    # Finished: merge the just-ended candidates into the best K so far.
    new_scores_Bx2K = jnp.where(is_eos_Bx2K, top_lp_Bx2K / brevity_penalty(alpha, index + 1), NEG_INF)
    all_scores = jnp.concatenate([s['finished_scores'], new_scores_Bx2K], axis=1)
    all_flags = jnp.concatenate([s['finished_flags'], is_eos_Bx2K], axis=1)
    all_seqs = jnp.concatenate([s['finished_seqs'], top_seqs_Bx2KxT], axis=1)
    finished_scores_BxK, finished_pick_BxK = jax.lax.top_k(jnp.where(all_flags, all_scores, NEG_INF * 10), K)
    finished_flags_BxK = jnp.take_along_axis(all_flags, finished_pick_BxK, axis=1)

    flat_parent_N = (parent_BxK + jnp.arange(B)[:, None] * K).reshape(B * K)
    cache = _reorder_cache(s['cache'], flat_parent_N, cache_batch_axis)
    logits_NxV, cache = step_fn(next_tokens_BxK.reshape(B * K, 1), cache)
    return dict(index=index + 1, live_seqs=new_live_seqs, live_lp=new_live_lp_BxK,
                finished_seqs=_gather_beams(all_seqs, finished_pick_BxK),
                finished_scores=jnp.where(finished_flags_BxK, finished_scores_BxK, NEG_INF),
                finished_flags=finished_flags_BxK, logits=logits_NxV, cache=cache)

  s = jax.lax.while_loop(cond, body, state)
  any_finished_B = jnp.any(s['finished_flags'], axis=1)
  live_scores_BxK = s['live_lp'] / brevity_penalty(alpha, s['index'])
  seqs_BxKxT = jnp.where(any_finished_B[:, None, None], s['finished_seqs'], s['live_seqs'])
  scores_BxK = jnp.where(any_finished_B[:, None], s['finished_scores'], live_scores_BxK)
  return seqs_BxKxT, scores_BxK


# ---------------------------------------------------------------- entry points

def _sort_by_score(tokens_BxKxT: Array, scores_BxK: Array) -> tuple[Array, Array]:
  order_BxK = jnp.argsort(-scores_BxK, axis=1)
  return _gather_beams(tokens_BxKxT, order_BxK), jnp.take_along_axis(scores_BxK, order_BxK, axis=1)


def predict_batch(module, params: PyTree, encoder_input_tokens_BxL: Array, max_decode_length: int,
                  config: DecodingConfig = DecodingConfig(), rng: Array | None = None
                  ) -> tuple[Array, Array]:
  """Decodes a batch; returns (tokens_BxKxT, scores_BxK), K = num_decodes, best first.

  Scores are sequence log-probabilities (beam search: divided by the brevity
  penalty). Tokens after EOS are PAD. Jit with `max_decode_length` and
  `config` static (see `make_predict_fn`).
  """
  batch = encoder_input_tokens_BxL.shape[0]
  K = config.num_decodes
  step, logits_NxV, cache = _start(module, params, encoder_input_tokens_BxL, max_decode_length, K)
  if config.method == 'beam':
    batch_axis = 1 if module.config.scan_layers else 0
    tokens_BxKxT, scores_BxK = beam_search(step, logits_NxV, cache, batch, K, max_decode_length,
                                           config.alpha, batch_axis)
  else:
    temperature = 0.0 if config.method == 'greedy' else config.temperature
    tokens_NxT, scores_N = temperature_sample(step, logits_NxV, cache, max_decode_length, rng,
                                              temperature, config.topk, config.topp)
    tokens_BxKxT, scores_BxK = tokens_NxT.reshape(batch, K, -1), scores_N.reshape(batch, K)
  return _sort_by_score(tokens_BxKxT, scores_BxK)


def make_predict_fn(module, max_decode_length: int, config: DecodingConfig = DecodingConfig()):
  """jitted (params, encoder_input_tokens_BxL, rng) -> (tokens_BxKxT, scores_BxK)."""
  return jax.jit(functools.partial(_predict, module, max_decode_length=max_decode_length, config=config))


def _predict(module, params, encoder_input_tokens_BxL, rng, *, max_decode_length, config):
  return predict_batch(module, params, encoder_input_tokens_BxL, max_decode_length, config, rng)


def greedy_without_cache(model, params: PyTree, encoder_input_tokens_BxL: Array,
                         max_decode_length: int) -> np.ndarray:
  """Reference decoder: full forward pass per step, argmax of the last position (no cache, no EOS stop).

  Slow (quadratic); for tests and debugging only.
  """
  batch = encoder_input_tokens_BxL.shape[0]
  decoder_inputs_BxT = np.zeros((batch, max_decode_length), np.int32)
  tokens_BxT = np.zeros((batch, max_decode_length), np.int32)
  forward = jax.jit(lambda p, b: model.compute_logits(p, b, dropout_rng=None))
  for index in range(max_decode_length):
    batch_dict = {'encoder_input_tokens': encoder_input_tokens_BxL, 'decoder_input_tokens': decoder_inputs_BxT,
                  'decoder_target_tokens': np.ones_like(decoder_inputs_BxT)}
    logits_BxTxV = np.asarray(forward(params, batch_dict))
    tokens_BxT[:, index] = logits_BxTxV[:, index].argmax(-1)
    if index + 1 < max_decode_length:
      decoder_inputs_BxT[:, index + 1] = tokens_BxT[:, index]
  return tokens_BxT


def score_targets(model, params: PyTree, encoder_input_tokens_BxL: Array, target_tokens_BxT: Array) -> Array:
  """Log-likelihood of each row's targets (EOS included if present), via `model.score_batch`."""
  target_tokens_BxT = jnp.asarray(target_tokens_BxT, jnp.int32)
  decoder_inputs_BxT = jnp.pad(target_tokens_BxT[:, :-1], ((0, 0), (1, 0)))
  return model.score_batch(params, {'encoder_input_tokens': encoder_input_tokens_BxL,
                                    'decoder_input_tokens': decoder_inputs_BxT,
                                    'decoder_target_tokens': target_tokens_BxT})


def rank_options(model, params: PyTree, encoder_input_tokens_BxL: Array, option_tokens_OxT: Array
                 ) -> tuple[Array, Array]:
  """Rank classification: (best option index_B, log-likelihoods_BxO) of each option as the target."""
  batch, num_options = encoder_input_tokens_BxL.shape[0], option_tokens_OxT.shape[0]
  inputs_NxL = _repeat_rows(encoder_input_tokens_BxL, num_options)
  options_NxT = jnp.tile(jnp.asarray(option_tokens_OxT, jnp.int32), (batch, 1))
  scores_BxO = score_targets(model, params, inputs_NxL, options_NxT).reshape(batch, num_options)
  return jnp.argmax(scores_BxO, axis=1), scores_BxO


def strip_after_eos(tokens_T: np.ndarray) -> list[int]:
  """Token ids up to (not including) the first EOS, without padding."""
  out = []
  for token in np.asarray(tokens_T).tolist():
    if token == EOS_ID:
      break
    if token != PAD_ID:
      out.append(token)
  return out

"""Cached decoding equals uncached argmax; beam/sampling special cases equal greedy; HF parity."""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import decoding
from flan_t5x import hf_format
from flan_t5x import inference
from flan_t5x import models
from flan_t5x import network
from flan_t5x import partitioning
from flan_t5x import train_state

import helpers

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'fixtures', 'tiny_hf_t5')
MAX_LEN = 10


def _model_and_params(**overrides):
  model = helpers.tiny_model(**overrides)
  params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(1), 1, 12, MAX_LEN))
  return model, params


def _inputs():
  rng = np.random.RandomState(0)
  tokens = rng.randint(2, 300, size=(3, 12)).astype(np.int32)
  tokens[1, 7:] = 0  # padding must be masked in the encoder and in cross-attention
  return tokens


@pytest.fixture(scope='module')
def tiny():
  return _model_and_params()


def _decode(model, params, inputs, cfg=decoding.DecodingConfig(), rng=None):
  tokens, scores = decoding.make_predict_fn(model.module, MAX_LEN, cfg)(
      params, inputs, rng if rng is not None else jax.random.PRNGKey(0))
  return np.asarray(tokens), np.asarray(scores)


def _stop_at_eos(tokens_BxT):
  out = tokens_BxT.copy()
  for row in out:
    eos = np.flatnonzero(row == decoding.EOS_ID)
    if eos.size:
      row[eos[0] + 1:] = 0
  return out


@pytest.mark.parametrize('scan_layers', [False, True])
def test_cached_greedy_equals_uncached_argmax(scan_layers):
  model, params = _model_and_params(scan_layers=scan_layers)
  inputs = _inputs()
  reference = decoding.greedy_without_cache(model, params, inputs, MAX_LEN)
  tokens, scores = _decode(model, params, inputs)
  np.testing.assert_array_equal(tokens[:, 0], _stop_at_eos(reference))
  # The reported score is the model's log-likelihood of the decoded tokens.
  expected = decoding.score_targets(model, params, inputs, tokens[:, 0])
  np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-4, atol=1e-4)


def test_beam_of_one_and_greedy_sampling_equal_greedy(tiny):
  model, params = tiny
  inputs = _inputs()
  greedy, _ = _decode(model, params, inputs)
  for cfg in (decoding.DecodingConfig('beam', 1, alpha=0.0),
              decoding.DecodingConfig('sample', 1, temperature=0.0),
              decoding.DecodingConfig('sample', 1, temperature=1.0, topk=1)):
    tokens, _ = _decode(model, params, inputs, cfg, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(tokens, greedy, err_msg=str(cfg))


def test_beam_search_sorted_scores_match_rescoring(tiny):
  model, params = tiny
  inputs = _inputs()
  cfg = decoding.DecodingConfig('beam', 4, alpha=0.6)
  tokens_BxKxT, scores_BxK = _decode(model, params, inputs, cfg)
  assert tokens_BxKxT.shape == (3, 4, MAX_LEN)
  assert np.all(np.diff(scores_BxK, axis=1) <= 1e-6)
  flat = tokens_BxKxT.reshape(12, MAX_LEN)
  log_likelihood = np.asarray(decoding.score_targets(model, params, np.repeat(inputs, 4, axis=0), flat))
  lengths = np.array([min(len(decoding.strip_after_eos(t)) + 1, MAX_LEN) for t in flat])
  penalty = np.asarray(decoding.brevity_penalty(0.6, lengths))
  np.testing.assert_allclose(scores_BxK.reshape(-1), log_likelihood / penalty, rtol=1e-4, atol=1e-4)
  # Beam search finds a sequence at least as likely (length-normalized) as greedy's.
  greedy, _ = _decode(model, params, inputs)
  greedy_ll = np.asarray(decoding.score_targets(model, params, inputs, greedy[:, 0]))
  greedy_len = np.array([min(len(decoding.strip_after_eos(t)) + 1, MAX_LEN) for t in greedy[:, 0]])
  assert np.all(scores_BxK[:, 0] >= greedy_ll / np.asarray(decoding.brevity_penalty(0.6, greedy_len)) - 1e-4)


def test_sampling_draws_distinct_sequences_and_respects_topk(tiny):
  model, params = tiny
  inputs = _inputs()
  tokens, scores = _decode(model, params, inputs, decoding.DecodingConfig('sample', 4, temperature=1.0, topk=5),
                           jax.random.PRNGKey(7))
  assert tokens.shape == (3, 4, MAX_LEN)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)
  assert len({tuple(t) for t in tokens[0]}) > 1
  # With top-k 5 every first token is among the 5 most likely first tokens.
  logits = model.compute_logits(params, {'encoder_input_tokens': inputs,
                                         'decoder_input_tokens': np.zeros((3, 1), np.int32),
                                         'decoder_target_tokens': np.ones((3, 1), np.int32)}, None)
  top5 = np.argsort(-np.asarray(logits)[:, 0], axis=-1)[:, :5]
  for row in range(3):
    assert set(tokens[row, :, 0]) <= set(top5[row])


def test_rank_options_picks_the_most_likely_option(tiny):
  model, params = tiny
  inputs = _inputs()
  options = np.array([[5, 1, 0], [6, 7, 1], [8, 1, 0]], np.int32)
  best, scores = decoding.rank_options(model, params, inputs, options)
  for row in range(3):
    per_option = [float(decoding.score_targets(model, params, inputs[row:row + 1], options[o:o + 1])[0])
                  for o in range(3)]
    np.testing.assert_allclose(np.asarray(scores)[row], per_option, rtol=1e-5, atol=1e-5)
    assert int(best[row]) == int(np.argmax(per_option))


def test_runner_on_mesh_matches_direct_decoding(tiny):
  model, params = tiny
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  runner = inference.InferenceRunner(model, partitioner)
  placed = jax.device_put(params, train_state.param_layout(model, partitioner).shardings)
  inputs = _inputs()
  tokens, _ = runner.predict(placed, inputs, MAX_LEN)
  direct, _ = _decode(model, params, inputs)
  np.testing.assert_array_equal(tokens, direct)


def test_invalid_decoding_config_raises():
  with pytest.raises(ValueError, match='method'):
    decoding.DecodingConfig('nucleus')
  with pytest.raises(ValueError, match='Greedy'):
    decoding.DecodingConfig('greedy', num_decodes=2)


def test_cached_greedy_reproduces_hugging_face_generate():
  params, config = hf_format.load(FIXTURE, dtype=np.float32)
  config = dataclasses.replace(config, dtype='float32', dropout_rate=0.0)
  reference = np.load(os.path.join(FIXTURE, 'reference.npz'))
  expected = reference['greedy_tokens']
  module = network.Transformer(config)
  model = models.EncoderDecoderModel(module)
  inputs = reference['encoder_input_tokens'].astype(np.int32)
  new_tokens = expected.shape[1]
  tokens, _ = decoding.make_predict_fn(module, new_tokens)(params, inputs, jax.random.PRNGKey(0))
  assert not np.any(expected == decoding.EOS_ID), 'fixture generated EOS; the comparison would need a stop'
  np.testing.assert_array_equal(np.asarray(tokens)[:, 0], expected)
  np.testing.assert_array_equal(decoding.greedy_without_cache(model, params, inputs, new_tokens), expected)


def test_argmax_last_axis_equals_jnp_argmax_with_ties():
  logits_BxV = np.random.RandomState(0).randint(0, 4, size=(6, 50)).astype(np.float32)  # many ties
  np.testing.assert_array_equal(np.asarray(decoding.argmax_last_axis(jnp.asarray(logits_BxV))),
                                logits_BxV.argmax(axis=-1))

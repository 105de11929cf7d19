"""The vocabulary-chunked loss equals the full-logits loss: values, metrics and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_t5x import losses
from flan_t5x import models
from flan_t5x import network
from flan_t5x import vocab_chunked_loss

import helpers


def test_num_chunks_splits_the_vocabulary_evenly():
  assert vocab_chunked_loss.num_chunks(32128, 4096) == 8  # 8 x 4016
  assert vocab_chunked_loss.num_chunks(384, 4096) == 1
  assert vocab_chunked_loss.num_chunks(384, 100) == 4
  assert vocab_chunked_loss.num_chunks(7, 3) == 7  # a prime: one column per chunk
  with pytest.raises(ValueError, match='max_chunk_width'):
    vocab_chunked_loss.num_chunks(384, 0)


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_statistics_and_gradients_match_full_logits(label_smoothing):
  rng = np.random.RandomState(0)
  tokens, embed, vocab = 12, 8, 30
  y_NxE = jnp.asarray(rng.randn(tokens, embed), jnp.float32)
  kernel_ExV = jnp.asarray(rng.randn(embed, vocab), jnp.float32)
  targets_N = jnp.asarray(rng.randint(0, vocab, tokens), jnp.int32)
  weights_BxT = jnp.asarray(rng.rand(3, 4) > 0.3, jnp.float32)

  def loss(stats):
    return losses.cross_entropy_from_statistics(stats, vocab, (3, 4), weights_BxT, label_smoothing, 1e-2, 7.0)[0]

  plain = lambda y, k: loss(vocab_chunked_loss.plain_logit_statistics(y @ k, targets_N))
  chunked = lambda y, k: loss(vocab_chunked_loss.logit_statistics(y, k, targets_N, max_chunk_width=7))
  want = jax.value_and_grad(plain, argnums=(0, 1))(y_NxE, kernel_ExV)
  got = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(y_NxE, kernel_ExV)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  full = vocab_chunked_loss.plain_logit_statistics(y_NxE @ kernel_ExV, targets_N)
  parts = vocab_chunked_loss.logit_statistics(y_NxE, kernel_ExV, targets_N, max_chunk_width=7)
  for a, b in zip(full, parts):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def _model(chunk_width, **config):
  return models.EncoderDecoderModel(
      network.Transformer(helpers.tiny_config(**config)), loss_normalizing_factor='NUM_REAL_TARGET_TOKENS',
      label_smoothing=0.1, loss_vocab_chunk_width=chunk_width)


def test_model_loss_metrics_and_gradients_match_full_logits():
  batch = _batch()
  chunked, full = _model(100), _model(None)  # 384 = 4 chunks of 96
  assert chunked.uses_vocab_chunked_loss() and not full.uses_vocab_chunked_loss()
  params = nn.meta.unbox(full.init_params(jax.random.PRNGKey(0), 4, 16, 8))
  grad = lambda model: jax.jit(jax.value_and_grad(lambda p: model.loss_fn(p, batch, None), has_aux=True))(params)
  (want_loss, want_metrics), want_grads = grad(full)
  (got_loss, got_metrics), got_grads = grad(chunked)
  np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
  for key in want_metrics:
    np.testing.assert_allclose(float(got_metrics[key]), float(want_metrics[key]), rtol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(want_grads), jax.tree.leaves(got_grads)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_tied_embeddings_take_full_logits():
  assert not _model(100, logits_via_embedding=True).uses_vocab_chunked_loss()
  with pytest.raises(ValueError, match='loss_vocab_chunk_width'):
    _model(0)


def _batch():
  rng = np.random.RandomState(0)
  targets = rng.randint(2, 384, size=(4, 8)).astype(np.int32)
  targets[:, -2:] = 0  # padding
  inputs = rng.randint(2, 384, size=(4, 16)).astype(np.int32)
  inputs[:, -3:] = 0
  return {'encoder_input_tokens': inputs, 'decoder_target_tokens': targets,
          'decoder_input_tokens': np.concatenate([np.zeros((4, 1), np.int32), targets[:, :-1]], axis=1),
          'decoder_loss_weights': (targets > 0).astype(np.float32)}


@pytest.mark.parametrize('chunk_width', [100, None])
def test_all_equal_logits_count_no_token_correct(chunk_width):
  """A collapsed model (every logit equal, loss ln V) must not read accuracy 1.0 (ties are not correct)."""
  model = _model(chunk_width)
  params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(0), 4, 16, 8))
  params['decoder']['logits_dense']['kernel'] = jnp.zeros_like(params['decoder']['logits_dense']['kernel'])
  batch = _batch()
  _, metrics = jax.jit(lambda p: model.loss_fn(p, batch, None))(params)
  assert float(metrics['num_tokens']) == 24.0
  assert float(metrics['correct_tokens']) == 0.0
  np.testing.assert_allclose(float(metrics['cross_ent_sum']) / 24.0, np.log(384.0), rtol=1e-5)


def test_tied_maximum_goes_to_the_lowest_id_in_both_paths():
  """T5X's argmax semantics: of equal maxima the first id wins, also across vocabulary chunks."""
  logits_NxV = np.zeros((3, 30), np.float32)
  logits_NxV[:, [4, 25]] = 2.0  # tied maxima in the first and the fourth chunk of 7 columns
  targets_N = jnp.asarray([4, 25, 9], jnp.int32)
  y_NxE, kernel_ExV = jnp.asarray(logits_NxV), jnp.eye(30, dtype=jnp.float32)
  for stats in (vocab_chunked_loss.plain_logit_statistics(y_NxE @ kernel_ExV, targets_N),
                vocab_chunked_loss.logit_statistics(y_NxE, kernel_ExV, targets_N, max_chunk_width=7)):
    assert np.asarray(stats.argmax_N).tolist() == [4, 4, 4]

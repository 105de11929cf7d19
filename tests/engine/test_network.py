"""Network structure (T5X names/shapes/axes), masks and packing, scan equivalence."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from flan_t5x import layers
from flan_t5x import network

import helpers


def _init(model, seed, batch, inputs, targets):
  return nn.meta.unbox(jax.jit(model.init_params, static_argnums=(1, 2, 3))(
      jax.random.PRNGKey(seed), batch, inputs, targets))


def _loss(model, params, batch, rng=None):
  # Jitted: eager op-by-op execution of the network is slow on CPU.
  return jax.jit(lambda p, b, r: model.loss_fn(p, b, r))(params, batch, rng)


def _flat(tree):
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  return {'/'.join(k.key for k in path): leaf for path, leaf in leaves}


def test_parameter_names_shapes_and_axes_follow_t5x():
  model = helpers.tiny_model()
  params = _flat(model.init_params(jax.random.PRNGKey(0), 2, 8, 4))
  expected = {
      'token_embedder/embedding': ((384, 32), ('vocab', 'embed')),
      'encoder/relpos_bias/rel_embedding': ((2, 32), ('heads', 'relpos_buckets')),
      'encoder/layers_0/pre_attention_layer_norm/scale': ((32,), ('embed',)),
      'encoder/layers_0/attention/query/kernel': ((32, 32), ('embed', 'joined_kv')),
      'encoder/layers_1/attention/out/kernel': ((32, 32), ('joined_kv', 'embed')),
      'encoder/layers_0/mlp/wi_0/kernel': ((32, 64), ('embed', 'mlp')),
      'encoder/layers_0/mlp/wi_1/kernel': ((32, 64), ('embed', 'mlp')),
      'encoder/layers_0/mlp/wo/kernel': ((64, 32), ('mlp', 'embed')),
      'encoder/encoder_norm/scale': ((32,), ('embed',)),
      'decoder/layers_1/self_attention/key/kernel': ((32, 32), ('embed', 'joined_kv')),
      'decoder/layers_0/encoder_decoder_attention/value/kernel': ((32, 32), ('embed', 'joined_kv')),
      'decoder/layers_0/pre_self_attention_layer_norm/scale': ((32,), ('embed',)),
      'decoder/layers_0/pre_cross_attention_layer_norm/scale': ((32,), ('embed',)),
      'decoder/layers_0/pre_mlp_layer_norm/scale': ((32,), ('embed',)),
      'decoder/relpos_bias/rel_embedding': ((2, 32), ('heads', 'relpos_buckets')),
      'decoder/decoder_norm/scale': ((32,), ('embed',)),
      'decoder/logits_dense/kernel': ((32, 384), ('embed', 'vocab')),
  }
  for name, (shape, axes) in expected.items():
    assert params[name].value.shape == shape, name
    assert params[name].names == axes, name
    assert params[name].value.dtype == jnp.float32
  # 2 layers x (enc: 2 norms + 4 attn + 3 mlp; dec: 3 norms + 8 attn + 3 mlp) + 7 shared
  assert len(params) == 2 * 9 + 2 * 14 + 6


def test_relative_position_buckets_match_t5():
  rel = np.arange(-200, 201)
  bidir = layers.relative_position_bucket(rel, True, 32, 128)
  assert bidir[200] == 0 and bidir[201] == 17 and bidir[199] == 1  # 0, +1, -1
  assert bidir.max() == 31 and bidir.min() == 0
  assert bidir[0] == 15 and bidir[-1] == 31  # far past / far future saturate
  causal = layers.relative_position_bucket(rel, False, 32, 128)
  assert (causal[201:] == 0).all()  # the future is one bucket for the decoder
  assert causal[200 - 15] == 15 and causal[200 - 16] == 16 and causal[0] == 31


def test_bf16_activations_keep_fp32_params_and_logits():
  model = helpers.tiny_model(dtype='bfloat16')
  params = _init(model, 0, 2, 8, 4)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens = jnp.ones((2, 8), jnp.int32)
  logits = jax.jit(lambda p, b: model.compute_logits(p, b, None))(params, {'encoder_input_tokens': tokens, 'decoder_input_tokens': tokens[:, :4],
                                         'decoder_target_tokens': tokens[:, :4]})
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


def _converted(pack):
  examples = [{'inputs': [5, 6, 7, 8, 1], 'targets': [9, 10, 11, 1]},
              {'inputs': [12, 13, 1], 'targets': [14, 15, 16, 17, 1]}]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature={k: tf.TensorSpec([None], tf.int32) for k in ('inputs', 'targets')})
  converted = seqio.EncDecFeatureConverter(pack=pack)(ds, {'inputs': 16, 'targets': 12})
  return next(converted.batch(2).as_numpy_iterator())


def test_packed_batch_gives_same_token_losses_as_unpacked():
  model = helpers.tiny_model()
  params = _init(model, 1, 2, 16, 12)
  packed, unpacked = _converted(True), _converted(False)
  assert packed['encoder_segment_ids'].shape == (1, 16)
  _, packed_metrics = _loss(model, params, packed)
  _, unpacked_metrics = _loss(model, params, unpacked)
  assert packed_metrics['num_tokens'] == unpacked_metrics['num_tokens'] == 9
  np.testing.assert_allclose(packed_metrics['cross_ent_sum'], unpacked_metrics['cross_ent_sum'], rtol=1e-5)


def test_scanned_layers_compute_the_same_function():
  plain = helpers.tiny_model()
  scanned = helpers.tiny_model(scan_layers=True, remat_policy='full')
  params = _init(plain, 2, 2, 16, 12)
  stacked = dict(params)
  for stack in ('encoder', 'decoder'):
    sub = dict(params[stack])
    layer_trees = [sub.pop(f'layers_{i}') for i in range(2)]
    sub['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *layer_trees)
    stacked[stack] = sub
  batch = _converted(True)
  loss_plain, _ = _loss(plain, params, batch)
  loss_scanned, _ = _loss(scanned, stacked, batch)
  np.testing.assert_allclose(loss_plain, loss_scanned, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p: scanned.loss_fn(p, batch, None)[0]))(stacked)
  assert grads['encoder']['layers']['mlp']['wi_0']['kernel'].shape == (2, 32, 64)


@pytest.mark.slow
def test_dropout_changes_training_loss_but_not_eval():
  model = helpers.tiny_model(dropout_rate=0.3)
  params = _init(model, 0, 2, 16, 12)
  batch = _converted(True)
  eval_a, _ = _loss(model, params, batch)
  eval_b, _ = _loss(model, params, batch)
  train_a, _ = _loss(model, params, batch, jax.random.PRNGKey(1))
  train_b, _ = _loss(model, params, batch, jax.random.PRNGKey(2))
  assert eval_a == eval_b and train_a != train_b


def test_config_validation():
  with pytest.raises(ValueError, match='remat_policy'):
    helpers.tiny_config(remat_policy='sometimes')


@pytest.mark.parametrize('chunk_width', [4096, None])  # the hidden-states path and the full-logits path
def test_half_packed_batch_is_refused(chunk_width):
  model = helpers.tiny_model()
  model.loss_vocab_chunk_width = chunk_width
  params = _init(model, 0, 2, 8, 4)
  batch = {'encoder_input_tokens': np.ones((2, 8), np.int32), 'decoder_input_tokens': np.ones((2, 4), np.int32),
           'decoder_target_tokens': np.ones((2, 4), np.int32), 'encoder_segment_ids': np.ones((2, 8), np.int32)}
  with pytest.raises(ValueError, match='both encoder_segment_ids and decoder_segment_ids'):
    model.loss_fn(params, batch, None)

"""A checkpoint of another model (fewer or more layers, other widths) is a configuration error naming
the tensors and the gin setting; it never triggers the damaged-checkpoint fallback, and train, eval,
infer and convert all refuse it."""

import shutil

import jax
import pytest

from flan_t5x import checkpoint_import
from flan_t5x import inference
from flan_t5x import model_mismatch
from flan_t5x import partitioning

import faults
import helpers


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('trained') / 'run'
  faults.train(model_dir, 2)  # helpers.tiny_model: 2 encoder and 2 decoder layers
  return model_dir


@pytest.mark.parametrize('fallback_to_previous', [False, True])
def test_resuming_with_fewer_decoder_layers_is_a_config_error_not_damage(trained, tmp_path, fallback_to_previous):
  model_dir = tmp_path / 'run'
  shutil.copytree(trained, model_dir)
  with pytest.raises(model_mismatch.ModelMismatchError) as caught:
    faults.train(model_dir, 4, model=helpers.tiny_model(num_decoder_layers=1),
                 fallback_to_previous=fallback_to_previous)
  message = str(caught.value)
  assert 'not a damaged checkpoint' in message
  assert 'params/decoder/layers_1/* (14 tensors) is in the checkpoint but not in this model' in message
  assert ('network.T5Config.num_decoder_layers (the checkpoint has 2 decoder layers, this model 1)'
          in message), message
  assert faults.steps_in(model_dir) == [1, 2] and not (model_dir / 'damaged').exists()


@pytest.mark.parametrize('overrides, setting', [
    ({'num_decoder_layers': 1}, 'num_decoder_layers (the checkpoint has 2 decoder layers, this model 1)'),
    ({'num_encoder_layers': 3}, 'num_encoder_layers (the checkpoint has 2 encoder layers, this model 3)'),
    ({'mlp_dim': 48}, 'network.T5Config.mlp_dim'),
    ({'num_heads': 4}, 'network.T5Config.num_heads'),
])
def test_eval_and_infer_refuse_a_smaller_or_larger_model(trained, overrides, setting):
  """inference.load_params is what eval and infer load with (a partial restore used to drop layers)."""
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  with pytest.raises(model_mismatch.ModelMismatchError, match=setting.replace('(', r'\(').replace(')', r'\)')):
    inference.load_params(helpers.tiny_model(**overrides), partitioner, str(trained))


def test_convert_refuses_a_smaller_model(trained):
  with pytest.raises(ValueError, match=r'decoder/layers_1/.* do not match|do not match the model'):
    checkpoint_import.load_params(str(trained), helpers.tiny_config(num_decoder_layers=1))


def test_likely_settings_name_each_field():
  saved = {'token_embedder/embedding': (384, 32), 'decoder/logits_dense/kernel': (32, 384),
           'encoder/layers_0/mlp/wi_0/kernel': (32, 64), 'encoder/layers_0/mlp/wi_1/kernel': (32, 64)}
  wanted = {'token_embedder/embedding': (512, 32), 'encoder/layers_0/mlp/wi/kernel': (32, 64)}
  assert model_mismatch.likely_settings(saved, wanted) == [
      'network.T5Config.logits_via_embedding', 'network.T5Config.mlp_activations', 'network.T5Config.vocab_size']

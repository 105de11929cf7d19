"""INITIAL_CHECKPOINT_PATH given as a Hugging Face directory: training starts from its parameters."""
import dataclasses

import jax
import numpy as np
import pytest

from flan_t5x import checkpoint_import, hf_format

import helpers
from test_training import _initial_state, _restore


def test_training_starts_from_a_hugging_face_checkpoint(tmp_path):
  model = helpers.tiny_model()
  params = jax.tree.map(np.asarray, helpers.make_trainer(model).init_state().params)
  params = jax.tree.map(lambda x: x + 0.5, params)  # unlike any fresh init
  hf_format.save(params, model.config, str(tmp_path / 'hf'))
  state = _initial_state(tmp_path / 'run', str(tmp_path / 'hf'), helpers.make_trainer(model))
  assert int(state.step) == 0
  restored = jax.tree.map(np.asarray, state.params)
  jax.tree.map(np.testing.assert_array_equal, restored, params)


def test_hugging_face_checkpoint_of_another_vocabulary_is_refused(tmp_path):
  model = helpers.tiny_model()
  other = dataclasses.replace(model.config, vocab_size=model.config.vocab_size + 128)
  params = jax.tree.map(np.asarray, helpers.make_trainer(helpers.tiny_model(
      vocab_size=other.vocab_size)).init_state().params)
  hf_format.save(params, other, str(tmp_path / 'hf'))
  with pytest.raises(ValueError, match='checkpoint vocab_size 512 but the model has vocab_size 384'):
    helpers.run_training(tmp_path / 'run', 1, initial_checkpoint=str(tmp_path / 'hf'))


@pytest.mark.slow
def test_a_trained_model_dir_is_detected_and_exports(tmp_path):
  helpers.run_training(tmp_path / 'run', 1)
  assert checkpoint_import.detect_format(str(tmp_path / 'run')) == 'flan_t5x'
  config = helpers.tiny_config()
  params, step, _ = checkpoint_import.load_params_and_step(str(tmp_path / 'run'), config)
  state = _restore(tmp_path / 'run')[1].state
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, state.params))
  hf_format.save(params, config, str(tmp_path / 'hf'))
  again, _ = hf_format.load(str(tmp_path / 'hf'), config)
  jax.tree.map(np.testing.assert_array_equal, again, params)

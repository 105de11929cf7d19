"""T5X's RestoreCheckpointConfig.assignment_map and fallback_to_scratch: the name rules (as T5X's
state_utils.apply_assignment_map applies them), a warm start through them, and the jobs that refuse them."""
import os

import gin
import jax
import numpy as np
import pytest

import helpers
from flan_t5x import assignment_map
from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import gin_utils
from flan_t5x import training as train_lib
from flan_t5x.t5x_names import eval_script

MODEL = ['encoder/layers_0/mlp/wi/kernel', 'encoder/layers_1/mlp/wi/kernel', 'decoder/layers_0/mlp/wi/kernel',
         'token_embedder/embedding']


def test_unmatched_names_are_read_under_their_own_name():
  plan = assignment_map.plan(MODEL, MODEL, None, fallback_to_scratch=False)
  assert plan.sources == {name: name for name in MODEL} and plan.step_from_checkpoint
  assert plan.unused_checkpoint_names == ()


def test_a_rule_reads_another_name_with_its_groups_and_the_first_matching_rule_wins():
  checkpoint = [n for n in MODEL if 'layers_1' not in n] + ['encoder/old_layers_1/mlp/wi/kernel']
  rules = ((r'target/encoder/layers_1/(.*)', r'target/encoder/old_layers_1/\1'),
           (r'target/encoder/.*', None))  # never reached for layers_1; layers_0 -> initialized
  plan = assignment_map.plan(MODEL, checkpoint, rules, fallback_to_scratch=True)
  assert plan.sources['encoder/layers_1/mlp/wi/kernel'] == 'encoder/old_layers_1/mlp/wi/kernel'
  assert plan.sources['encoder/layers_0/mlp/wi/kernel'] is None
  assert plan.sources['decoder/layers_0/mlp/wi/kernel'] == 'decoder/layers_0/mlp/wi/kernel'
  assert plan.unused_checkpoint_names == ('encoder/layers_0/mlp/wi/kernel',)
  assert plan.summary() == ('assignment_map: 3 parameters read (1 under other names), 1 initialized from '
                            'scratch, 1 checkpoint parameters not used')


def test_two_model_names_may_read_one_checkpoint_name():
  rules = ((r'target/encoder/layers_\d/(.*)', r'target/encoder/layers_0/\1'),)
  checkpoint = [n for n in MODEL if 'layers_1' not in n]
  plan = assignment_map.plan(MODEL, checkpoint, rules, fallback_to_scratch=False)
  assert plan.sources['encoder/layers_1/mlp/wi/kernel'] == 'encoder/layers_0/mlp/wi/kernel'


def test_a_checkpoint_name_no_rule_reads_wins_over_a_rule_for_that_name_as_in_t5x():
  """T5X keeps every checkpoint key no rule read, after the rules (tests/test_upstream_t5x.py checks
  this against T5X's own apply_assignment_map)."""
  rules = ((r'target/encoder/layers_1/(.*)', r'target/encoder/layers_0/\1'),)
  plan = assignment_map.plan(MODEL, MODEL, rules, fallback_to_scratch=False)
  assert plan.sources['encoder/layers_1/mlp/wi/kernel'] == 'encoder/layers_1/mlp/wi/kernel'


def test_optimizer_state_and_step_rules_count_as_used():
  rules = ((r'state/param_states.*', None), (r'state/step', None))
  plan = assignment_map.plan(MODEL, MODEL, rules, fallback_to_scratch=False)
  assert plan.sources == {name: name for name in MODEL} and not plan.step_from_checkpoint
  assert plan.summary().endswith('; the step starts at 0')


@pytest.mark.parametrize('rules, fallback, message', [
    (((r'target/decoder/.*', None),), False, 'set utils.RestoreCheckpointConfig.fallback_to_scratch = True'),
    (((r'target/nothing/.*', None),), True, "Unused patterns in `assignment_map`: ['target/nothing/.*']"),
    (((r'target/decoder/(.*)', r'target/dec/\1'),), True, "maps 'target/decoder/layers_0/mlp/wi/kernel' to "
                                                         "'target/dec/layers_0/mlp/wi/kernel', which the checkpoint"),
    ((), False, "no parameter 'target/token_embedder/embedding'"),
])
def test_what_t5x_refuses_is_refused_naming_the_key(rules, fallback, message):
  checkpoint = MODEL[:-1] if not rules else MODEL
  with pytest.raises(assignment_map.AssignmentMapError) as raised:
    assignment_map.plan(MODEL, checkpoint, rules, fallback_to_scratch=fallback)
  assert message in str(raised.value)


@pytest.mark.parametrize('value', ['target/.*', [('a', None, 'b')], [(3, None)], [('(', None)]])
def test_a_malformed_map_is_refused_when_the_config_is_built(value):
  with pytest.raises(ValueError, match=r'assignment_map'):
    checkpoints.RestoreCheckpointConfig(path='x', assignment_map=value)


def test_the_map_parses_from_a_t5x_block_with_raw_strings():
  gin_utils.parse_gin(['gin/demo.gin'], [
      'utils.RestoreCheckpointConfig.fallback_to_scratch = True',
      "utils.RestoreCheckpointConfig.assignment_map = ((r'target/decoder/(.*)', None), "
      "(r'state\\/param_states.*', None))"], finalize=False)
  value = gin.query_parameter('utils.RestoreCheckpointConfig.assignment_map')
  assert value == (('target/decoder/(.*)', None), (r'state\/param_states.*', None))


def test_a_malformed_map_in_gin_is_one_line_at_parse_time():
  with pytest.raises(gin_utils.ConfigError) as raised:
    gin_utils.parse_gin(['gin/demo.gin'], ["utils.RestoreCheckpointConfig.assignment_map = (('(', None),)"],
                        finalize=False)
  assert 'is not a regular expression' in str(raised.value) and '\n' not in str(raised.value)


def _warm_start(tmp_path, restore_cfg):
  trainer = helpers.make_trainer()
  checkpointer = checkpoints.Checkpointer(str(tmp_path / 'run'), checkpoints.SaveCheckpointConfig(period=1),
                                          trainer.abstract_state)
  try:
    state, _, _, origin = train_lib._restore_or_init(trainer, checkpointer, restore_cfg, 0)  # pylint: disable=protected-access
  finally:
    checkpointer.close()
  return trainer, state, origin


def test_warm_start_reads_renamed_parameters_and_initializes_the_rest(tmp_path):
  """A checkpoint with the encoder's layers swapped and no decoder... read back through a map."""
  trainer = helpers.make_trainer()
  source = jax.device_get(trainer.init_state(jax.random.PRNGKey(7)).params)
  fresh = jax.device_get(trainer.init_state().params)  # what the warm-started model initializes itself to
  layers = sorted(k for k in source['encoder'] if k.startswith('layers_'))
  assert len(layers) >= 2
  saved = dict(source, encoder=dict(source['encoder'], **{layers[0]: source['encoder'][layers[1]],
                                                          layers[1]: source['encoder'][layers[0]]}))
  path = checkpoint_import.save_params_checkpoint(saved, str(tmp_path / 'initial'), step=5)
  rules = ((rf'target/encoder/{layers[0]}/(.*)', rf'target/encoder/{layers[1]}/\1'),
           (rf'target/encoder/{layers[1]}/(.*)', rf'target/encoder/{layers[0]}/\1'),
           (r'target/decoder/.*', None), (r'state/param_states.*', None))
  _, state, origin = _warm_start(tmp_path, checkpoints.RestoreCheckpointConfig(
      path=path, assignment_map=rules, fallback_to_scratch=True))
  params = jax.device_get(state.params)
  assert int(state.step) == 5
  for got, want in zip(jax.tree_util.tree_leaves(params['encoder']), jax.tree_util.tree_leaves(source['encoder'])):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree_util.tree_leaves(params['decoder']), jax.tree_util.tree_leaves(fresh['decoder'])):
    np.testing.assert_array_equal(got, want)
  assert not np.array_equal(params['decoder'][layers[0]]['mlp']['wi_0']['kernel'],
                            source['decoder'][layers[0]]['mlp']['wi_0']['kernel'])
  assert 'initialized from scratch' in origin and 'under other names' in origin


def test_fallback_to_scratch_fills_what_a_smaller_checkpoint_lacks(tmp_path):
  trainer = helpers.make_trainer()
  source = jax.device_get(trainer.init_state(jax.random.PRNGKey(3)).params)
  layers = sorted(k for k in source['decoder'] if k.startswith('layers_'))
  smaller = dict(source, decoder={k: v for k, v in source['decoder'].items() if k != layers[-1]})
  path = checkpoint_import.save_params_checkpoint(smaller, str(tmp_path / 'initial'))
  with pytest.raises(assignment_map.AssignmentMapError, match=f"no parameter 'target/decoder/{layers[-1]}/"):
    _warm_start(tmp_path, checkpoints.RestoreCheckpointConfig(path=path, assignment_map=()))
  _, state, _ = _warm_start(tmp_path, checkpoints.RestoreCheckpointConfig(path=path, fallback_to_scratch=True))
  params = jax.device_get(state.params)
  np.testing.assert_array_equal(params['decoder'][layers[0]]['mlp']['wi_0']['kernel'],
                                source['decoder'][layers[0]]['mlp']['wi_0']['kernel'])
  assert not os.path.exists(tmp_path / 'run' / 'checkpoint_0')


def test_eval_refuses_a_map_and_fallback_to_scratch_with_the_training_way(tmp_path):
  for field in ({'assignment_map': ((r'.*', None),)}, {'fallback_to_scratch': True}):
    with pytest.raises(ValueError, match=r'^utils\.RestoreCheckpointConfig\.'):
      eval_script.evaluate(model=helpers.tiny_model(), dataset_cfg=helpers.dataset_cfg(4, 'validation', shuffle=False),
                           restore_checkpoint_cfg=checkpoints.RestoreCheckpointConfig(path=str(tmp_path), **field),
                           output_dir=str(tmp_path / 'eval'))

"""T5X bindings flan_t5x honours act as they do in T5X: decoding, evaluation counts, checkpoints,
training options, optax optimizers (the parse-level table is tests/engine/test_t5x_bindings.py)."""
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flan_t5x import actions
from flan_t5x import checkpoints
from flan_t5x import decoding
from flan_t5x import gin_utils
from flan_t5x import partitioning
from flan_t5x import schedules
from flan_t5x import summaries
from flan_t5x import t5x_names
from flan_t5x import training as train_lib
from flan_t5x import trainer as trainer_lib
from flan_t5x.t5x_names import models as t5x_models

import helpers

T5X_IMPORTS = ['from __gin__ import dynamic_registration', 'from t5x import decoding', 'from t5x import models']


@pytest.fixture
def parse_eval_demo():
  def parse(*bindings):
    gin.clear_config(clear_constants=True)
    gin_utils.parse_gin(['gin/eval_demo.gin'], T5X_IMPORTS + list(bindings), job='eval', finalize=False)
    return gin.query_parameter('%MODEL').scoped_configurable_fn()
  yield parse
  gin.clear_config(clear_constants=True)


@pytest.mark.parametrize('bindings, expected', [
    ((), decoding.DecodingConfig('beam', 1, alpha=0.6)),  # T5X's default decode_fn
    (('models.EncoderDecoderModel.predict_batch_with_aux.num_decodes = 4',), decoding.DecodingConfig('beam', 4)),
    (('BEAM_SIZE = 3', 'models.EncoderDecoderModel.predict_batch_with_aux.num_decodes = %BEAM_SIZE'),
     decoding.DecodingConfig('beam', 3)),  # T5X's export.gin binds it through a macro
    (('models.EncoderDecoderModel.decode_fn = @decoding.beam_search', 'decoding.beam_search.alpha = 0.8'),
     decoding.DecodingConfig('beam', 1, alpha=0.8)),
    # As in T5X, a binding on the default decode_fn that the file does not name has no effect.
    (('decoding.beam_search.alpha = 0.8',), decoding.DecodingConfig('beam', 1, alpha=0.6)),
    (('models.EncoderDecoderModel.decode_fn = @decoding.temperature_sample',), decoding.DecodingConfig('greedy')),
    (('models.EncoderDecoderModel.decode_fn = @decoding.temperature_sample', 'decoding.temperature_sample.topk = 0',
      'decoding.temperature_sample.topp = 0.9', 'decoding.temperature_sample.temperature = 0.7'),
     decoding.DecodingConfig('sample', 1, temperature=0.7, topk=0, topp=0.9)),
])
def test_t5x_decoding_bindings_set_how_eval_and_infer_decode(parse_eval_demo, bindings, expected):
  assert t5x_models.bound_decoding_config(parse_eval_demo(*bindings)) == expected


def test_temperature_sample_refuses_topk_and_topp_together_as_t5x(parse_eval_demo):
  model = parse_eval_demo('models.EncoderDecoderModel.decode_fn = @decoding.temperature_sample',
                          'decoding.temperature_sample.topp = 0.9')  # topk stays T5X's default 1
  with pytest.raises(ValueError, match='at most one of `topp` or `topk`'):
    t5x_models.bound_decoding_config(model)


def test_predict_batch_with_aux_returns_t5x_shapes_and_order():
  model = helpers.tiny_model()
  params = jax.tree.map(np.asarray, nn.meta.unbox(model.init_params(jax.random.PRNGKey(0), 2, 8, 6)))
  batch = {'encoder_input_tokens': jnp.array([[5, 6, 7, 1, 0, 0, 0, 0], [9, 8, 1, 0, 0, 0, 0, 0]], jnp.int32),
           'decoder_input_tokens': jnp.zeros((2, 6), jnp.int32)}
  best_BxT, aux = model.predict_batch_with_aux(params, batch, num_decodes=3)
  all_BxKxT, all_aux = model.predict_batch_with_aux(params, batch, return_all_decodes=True, num_decodes=3)
  assert best_BxT.shape == (2, 6) and aux['scores'].shape == (2,)
  assert all_BxKxT.shape == (2, 3, 6) and bool(jnp.all(jnp.diff(all_aux['scores'], axis=1) >= 0))  # best last
  np.testing.assert_array_equal(best_BxT, all_BxKxT[:, -1])
  np.testing.assert_array_equal(aux['scores'], all_aux['scores'][:, -1])


def test_seqio_evaluator_num_examples_is_the_examples_per_task(parse_eval_demo):
  parse_eval_demo('import seqio', 'seqio.Evaluator.num_examples = 8', 'seqio.JSONLogger.write_n_results = 3')
  assert t5x_names.examples_per_task(None, 'EVAL_MAX_EXAMPLES') == 8
  assert t5x_names.seqio_binding('seqio.JSONLogger', 'write_n_results') == 3
  with pytest.raises(ValueError, match='EVAL_MAX_EXAMPLES = 4 and seqio.Evaluator.num_examples = 8'):
    t5x_names.examples_per_task(4, 'EVAL_MAX_EXAMPLES')


@pytest.mark.parametrize('binding, reason', [
    ("utils.RestoreCheckpointConfig.mode = 'all'", "run eval once per checkpoint_<step>"),
    ('utils.RestoreCheckpointConfig.strict = False', "only T5X's default True is supported"),
    ("utils.SaveCheckpointConfig.dtype = 'bfloat16'", 'flan_t5x saves float32 parameters only'),
    ('utils.DatasetConfig.use_custom_packing_ops = True', "flan_t5x packs with SeqIO's TF ops"),
])
def test_values_flan_t5x_cannot_honour_are_refused_at_parse_time_in_one_line(binding, reason):
  gin.clear_config(clear_constants=True)
  try:
    with pytest.raises(gin_utils.ConfigError) as refused:
      gin_utils.parse_gin(['gin/eval_demo.gin'], ['from __gin__ import dynamic_registration', 'from t5x import utils',
                                                   binding], job='eval', finalize=False)
  finally:
    gin.clear_config(clear_constants=True)
  assert reason in str(refused.value) and '\n' not in str(refused.value)


def test_optimizers_chain_is_the_optax_chain_of_its_transformations():
  gin.clear_config(clear_constants=True)
  try:
    gin.parse_config('\n'.join(['from __gin__ import dynamic_registration', 'import optax',
                                'from flan_t5x.t5x_names import optimizers',
                                'optimizers.chain.transformations = [@optax.clip(), @optax.adamw()]',
                                'optax.clip.max_delta = 1.0', 'optax.adamw.learning_rate = 0.001']))
    optimizer_def = gin.get_configurable('optimizers.chain')()
  finally:
    gin.clear_config(clear_constants=True)
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = {'w': jnp.array([0.5, 4.0, -0.1])}
  ours = optimizer_def.create(learning_rate_fn=123.0)  # as T5X: the transformations' own learning rate
  reference = optax.chain(optax.clip(1.0), optax.adamw(0.001))
  got, _ = ours.update(grads, ours.init(params), params)
  want, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(got['w'], want['w'])


def test_train_honours_t5x_training_options(tmp_path, capsys):
  """checkpoint_steps, stats_period, gc_period, run_eval_before_training, summarize_config_fn,
  fallback_to_scratch and TerminateOnNanAction in one tiny run; T5X's period rule is warned about."""
  summarized = []
  empty = tmp_path / 'no_checkpoint_here'
  empty.mkdir()

  def trainer_cls(**kw):
    return trainer_lib.Trainer(learning_rate_fn=schedules.create_learning_rate_scheduler(
        factors='constant', base_learning_rate=0.01), **kw)
  model_dir = tmp_path / 'run'
  train_lib.train(
      model=helpers.tiny_model(), model_dir=str(model_dir), train_dataset_cfg=helpers.dataset_cfg(4),
      train_eval_dataset_cfg=helpers.dataset_cfg(4, 'validation', seed=42, shuffle=False),
      checkpoint_cfg=checkpoints.CheckpointConfig(
          save=checkpoints.SaveCheckpointConfig(period=5, checkpoint_steps=(2,)),
          restore=checkpoints.RestoreCheckpointConfig(path=str(empty), fallback_to_scratch=True)),
      partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]), trainer_cls=trainer_cls,
      total_steps=6, eval_steps=1, eval_period=3, random_seed=0, use_progress_bar=False,
      stats_period=2, gc_period=3, run_eval_before_training=True,
      summarize_config_fn=lambda *args: summarized.append(args),
      actions={'TRAIN_EVAL': [actions.TerminateOnNanAction('engine_test_copy')]})
  out = capsys.readouterr().out
  assert 'holds no checkpoint: starting from scratch' in out
  assert 'T5X refuses these' in out  # EVAL_PERIOD 3 and a checkpoint period of 5
  assert sorted(p for p in os.listdir(model_dir) if p.startswith('checkpoint_')) == [
      'checkpoint_2', 'checkpoint_5', 'checkpoint_6']
  assert sorted(summaries.read_scalars(str(model_dir / 'train'), 'loss')) == [2, 4, 6]
  assert sorted(summaries.read_scalars(str(model_dir / 'validation'), 'loss')) == [0, 3, 6]
  assert summarized == [(str(model_dir), None, 0)]


def test_train_refuses_t5x_options_it_cannot_honour(tmp_path):
  run = lambda **kw: helpers.run_training(tmp_path / 'x', 1, **kw)
  with pytest.raises(ValueError, match="TerminateOnNanAction\\(\\)\\]\\} only"):
    run(actions={'TRAIN': [actions.TerminateOnNanAction('t')]})
  with pytest.raises(ValueError, match='use_orbax = False'):
    run(use_orbax=False)
  assert not (tmp_path / 'x').exists()


def test_t5x_main_run_mode_and_flags_reach_the_job():
  """python -m flan_t5x.main --run_mode=eval runs flan_t5x.eval (here: its parse-time refusal, one line),
  with T5X's --tfds_data_dir and --initialization_timeout accepted."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  command = [sys.executable, '-m', 'flan_t5x.main', '--run_mode=eval', '--gin_file=gin/eval_demo.gin',
             '--tfds_data_dir=/tmp/no_tfds', '--initialization_timeout=30',
             "--gin.utils.RestoreCheckpointConfig.mode='all'"]
  done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=helpers.REPO_ROOT)
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1].startswith("error: utils.RestoreCheckpointConfig.mode = 'all': ")
  assert 'Traceback' not in done.stderr
  other = subprocess.run([sys.executable, '-m', 'flan_t5x.main', '--run_mode=precompile'], capture_output=True,
                         text=True, timeout=120, cwd=helpers.REPO_ROOT)
  assert other.returncode == 2 and 'python -m flan_t5x.plan' in other.stderr


def test_a_t5x_model_dir_is_resumed_in_place(tmp_path, capsys):
  """A MODEL_DIR holding T5X's layout (written here by flan_t5x's T5X exporter) continues from its
  parameters and step; at TRAIN_STEPS nothing is written beside T5X's checkpoint."""
  from flan_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top
  from flan_t5x import upstream_t5x_export  # pylint: disable=g-import-not-at-top
  source = tmp_path / 'flan'
  helpers.run_training(source, 2)
  params = checkpoint_import.load_params(str(source / 'checkpoint_2'))
  t5x_dir = tmp_path / 't5x'
  upstream_t5x_export.save_for_config(params, helpers.tiny_model().config, 2, str(t5x_dir))
  assert checkpoint_import.newest_t5x_step_dir(str(t5x_dir)) == str(t5x_dir / 'checkpoint_2')
  step, _ = helpers.run_training(t5x_dir, 2)
  assert step == 2 and sorted(p.name for p in t5x_dir.iterdir()) == ['checkpoint_2']
  assert "already holds step 2 (T5X's" in capsys.readouterr().out
  step, _ = helpers.run_training(t5x_dir, 3)
  assert step == 3 and (t5x_dir / 'checkpoint_2').is_dir() and (t5x_dir / 'checkpoint_3').is_dir()
  assert f"resumed T5X's {t5x_dir / 'checkpoint_2'} at step 2" in capsys.readouterr().out

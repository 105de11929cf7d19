"""Every gin file parses with gin's parser; T5X dims; typos fail at parse; the CLI trains."""

import glob
import importlib.util
import os
import subprocess
import sys

import gin
import pytest

from flan_t5x import gin_utils
from flan_t5x import models
from flan_t5x import network

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = gin_utils.REPO_ROOT
# One tree for both engines: every file parses under flan_t5x (tests/test_upstream_t5x.py parses the
# shared ones under upstream T5X where it is installed).
GIN_FILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'gin', '**', '*.gin'), recursive=True))
EVAL_FILES = ('gin/eval_demo.gin', 'gin/eval_heldout.gin', 'gin/runs/eval.gin', 'gin/runs/flan_eval.gin',
              'gin/forgetting/eval_suite.gin', 'gin/forgetting/eval_demo_suite.gin')
INFER_FILES = ('gin/infer.gin', 'gin/infer_jsonl.gin', 'gin/runs/infer.gin')
T5X_DIMS = {  # emb_dim, num_heads, layers, head_dim, mlp_dim from t5x/examples/t5/t5_1_1/*.gin
    'tiny': (8, 4, 2, 3, 16), 'small': (512, 6, 8, 64, 1024), 'base': (768, 12, 12, 64, 2048),
    'large': (1024, 16, 24, 64, 2816), 'xl': (2048, 32, 24, 64, 5120), 'xxl': (4096, 64, 24, 64, 10240)}
# tiny_task's vocabulary (train checks that the model's matches the task's).
BYTE_VOCABULARY = ['--gin_bindings=from __gin__ import dynamic_registration', '--gin_bindings=import seqio',
                   '--gin_bindings=VOCABULARY = @seqio.ByteVocabulary()']
HAS_FLAN_TASKS = importlib.util.find_spec('flan_tasks') is not None


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)


@pytest.fixture(autouse=True)
def restore_main():
  main = sys.modules['__main__']  # parse_gin points `__main__` at the job's T5X entry point
  yield
  sys.modules['__main__'] = main


def _files_for(path):
  """Building blocks need a model file before them, size files a run file, as on the command line."""
  if path.startswith('gin/runs/') or path == 'gin/forgetting/eval_suite.gin':
    return ['gin/models/t5_1_1_tiny.gin', path]
  if path.startswith('gin/sizes/'):
    return ['gin/flan_mix.gin', path]
  return [path]


def _job_for(path):
  return 'eval' if path in EVAL_FILES else 'infer' if path in INFER_FILES else 'train'


def test_all_expected_gin_files_exist():
  for size in T5X_DIMS:
    assert f'gin/models/t5_1_1_{size}.gin' in GIN_FILES
  for size in ('small', 'base', 'large', 'xl', 'xxl'):
    assert f'gin/models/flan_t5_{size}.gin' in GIN_FILES
  for name in ('gin/runs/finetune.gin', 'gin/runs/pretrain.gin', 'gin/flan_mix.gin', 'gin/demo.gin',
               'gin/dialogsum.gin', 'gin/eval_heldout.gin', 'gin/infer.gin', 'gin/eval_demo.gin', 'gin/flan2022.gin'):
    assert name in GIN_FILES
  assert not [p for p in GIN_FILES if p.startswith('gin/t5x/')]  # one tree


@pytest.mark.parametrize('path', GIN_FILES)
def test_gin_file_parses(path):
  with open(os.path.join(REPO, path)) as f:
    if 'import flan_tasks' in f.read() and not HAS_FLAN_TASKS:
      pytest.skip('flan_tasks (task registry) is not importable yet')
  gin_utils.parse_gin(_files_for(path), ['DROPOUT_RATE = 0.0'], finalize=False, job=_job_for(path))
  if path.startswith('gin/models/'):
    model = gin.query_parameter('%MODEL').scoped_configurable_fn()
    assert isinstance(model, models.EncoderDecoderModel)
    cfg = model.config
    size = os.path.basename(path)[:-4].split('_')[-1]
    assert (cfg.emb_dim, cfg.num_heads, cfg.num_encoder_layers, cfg.head_dim, cfg.mlp_dim) == T5X_DIMS[size]
    assert cfg.num_decoder_layers == cfg.num_encoder_layers and cfg.vocab_size == 32128
    assert cfg.mlp_activations == ('gelu', 'linear') and not cfg.logits_via_embedding
    assert cfg.dtype == 'bfloat16'


def test_finetune_defaults_and_required_macros_match_t5x():
  gin_utils.parse_gin(['gin/models/t5_1_1_tiny.gin', 'gin/runs/finetune.gin'], finalize=False)
  assert gin.query_parameter('%BATCH_SIZE') == 128
  assert gin.query_parameter('%DROPOUT_RATE') == 0.1
  assert gin.query_parameter('%EVAL_PERIOD') == 1000 and gin.query_parameter('%EVAL_STEPS') == 20
  assert gin.query_parameter('%USE_CACHED_TASKS') is True
  for macro in ('MODEL_DIR', 'MIXTURE_OR_TASK_NAME', 'TASK_FEATURE_LENGTHS', 'TRAIN_STEPS', 'INITIAL_CHECKPOINT_PATH'):
    assert 'REQUIRED' in repr(gin.query_parameter(f'%{macro}'))


def test_misspelled_binding_fails_at_parse_time():
  with pytest.raises(ValueError, match='emb_dimm'):
    gin_utils.parse_gin(['gin/models/t5_1_1_tiny.gin'], ['network.T5Config.emb_dimm = 3'], finalize=False)


def test_a_bad_command_line_binding_is_named_in_its_error():
  """gin numbers the joined --gin.* flags, which the user never typed: the error quotes the binding instead."""
  bindings = ['from __gin__ import dynamic_registration', 'network.T5Config.num_layers = 2']
  with pytest.raises(gin_utils.ConfigError) as raised:
    gin_utils.parse_gin(['gin/models/t5_1_1_tiny.gin'], bindings, finalize=False)
  assert str(raised.value) == ("command line (--gin.* / --gin_bindings): `network.T5Config.num_layers = 2`: "
                               "'network' was not provided by an import statement.")
  with pytest.raises(gin_utils.ConfigError) as raised:  # gin's message ends with a caret line under the value
    gin_utils.parse_gin(['gin/demo.gin'], ['from t5x import optimizers', 'OPTIMIZER = @optimizers.AdamW()'],
                        finalize=False)
  assert str(raised.value) == ("command line (--gin.* / --gin_bindings): `OPTIMIZER = @optimizers.AdamW()`: "
                               "No configurable matching reference '@optimizers.AdamW()'.")


def test_gin_dot_flags_are_rewritten():
  assert gin_utils.rewrite_gin_args(['prog', '--gin.MODEL_DIR="\'/x\'"', '--gin_file=a.gin']) == [
      'prog', '--gin_bindings=MODEL_DIR = "\'/x\'"', '--gin_file=a.gin']


@pytest.mark.slow
def test_command_line_trains_saves_and_writes_config(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE, os.environ.get('PYTHONPATH', '')]),
             XLA_FLAGS='--xla_backend_optimization_level=0')
  bindings = {
      'MODEL_DIR': f"'{tmp_path}'", 'MIXTURE_OR_TASK_NAME': "'engine_test_copy'",
      'MIXTURE_OR_TASK_MODULE': "'tiny_task'", 'TASK_FEATURE_LENGTHS': "{'inputs': 32, 'targets': 16}",
      'TRAIN_STEPS': '2', 'BATCH_SIZE': '4', 'USE_CACHED_TASKS': 'False', 'INITIAL_CHECKPOINT_PATH': 'None',
      'EVAL_PERIOD': '2', 'EVAL_STEPS': '1', 'RANDOM_SEED': '0', 'DROPOUT_RATE': '0.0',
      'network.T5Config.vocab_size': '384', 'network.T5Config.dtype': "'float32'",
      'utils.SaveCheckpointConfig.period': '1'}
  cmd = [sys.executable, '-m', 'flan_t5x.train', '--gin_file=gin/models/t5_1_1_tiny.gin',
         '--gin_file=gin/runs/finetune.gin'] + [f'--gin.{k}={v}' for k, v in bindings.items()] + BYTE_VOCABULARY
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert f'MODEL_DIR={tmp_path}' in proc.stdout and 'TensorBoard' in proc.stdout
  assert sorted(p for p in os.listdir(tmp_path) if p.startswith('checkpoint_')) == ['checkpoint_1', 'checkpoint_2']
  assert os.listdir(tmp_path / 'train') and os.listdir(tmp_path / 'validation')
  config = (tmp_path / 'config.gin').read_text()
  assert 'engine_test_copy' in config and 'TRAIN_STEPS = 2' in config
  assert 'train_script.train' in (tmp_path / 'operative_config.gin').read_text()
  typo = subprocess.run(cmd + ['--gin.network.T5Config.num_layers=2'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert typo.returncode != 0 and 'num_layers' in typo.stderr


@pytest.mark.parametrize('peft_file', ['gin/runs/lora.gin', 'gin/runs/prompt_tuning.gin'])
def test_peft_run_files_compose_with_a_model_and_a_run_file(peft_file):
  from flan_t5x import lora, prompt_tuning  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin(['gin/flan_mix.gin', 'gin/sizes/small.gin', peft_file],
                      ['DROPOUT_RATE = 0.0', 'LORA_TARGETS = "all"' if 'lora' in peft_file else 'PROMPT_LENGTH = 20'],
                      finalize=False)
  cfg = gin.query_parameter('%MODEL').scoped_configurable_fn().config
  if 'lora' in peft_file:
    assert cfg.lora == lora.LoraConfig(rank=16, alpha=32.0, dropout_rate=0.05, targets='all')
    assert cfg.prompt_tuning is None
  else:
    assert cfg.prompt_tuning == prompt_tuning.PromptTuningConfig(length=20, init='vocab') and cfg.lora is None
    assert gin.query_parameter('train/DatasetConfig.pack') is False
  assert gin.query_parameter('Adafactor.multiply_by_parameter_scale') is False

"""The top-level gin files (one tree for T5X and flan_t5x) run on flan_t5x, without upstream T5X.

Each job runs as the README writes it, from a copy of the repository root (relative paths included),
with only CPU-cost overrides appended: model size (gin/sizes/tiny.gin), steps, batch, lengths,
examples decoded. Data: the hand-written FLAN layout and SentencePiece model of tests/conftest.py.
"""

import json
import os
import pathlib
import subprocess
import sys

import gin
import pytest

from flan_t5x import gin_utils

REPO = pathlib.Path(gin_utils.REPO_ROOT)
TINY = ['--gin_file=gin/sizes/tiny.gin']
SHORT_TRAIN = ['--gin.TRAIN_STEPS_RELATIVE=2', '--gin.BATCH_SIZE=4', '--gin.EVAL_PERIOD=2', '--gin.EVAL_STEPS=1',
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", '--gin.EVALUATOR_NUM_EXAMPLES=1']


@pytest.fixture(autouse=True)
def clean_gin():
  main = sys.modules['__main__']
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)
  sys.modules['__main__'] = main


def _run(root, *args, env=None, timeout=900):
  full_env = dict(os.environ, PYTHONPATH=str(root))
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, '-m', *args], cwd=root, capture_output=True, text=True, timeout=timeout,
                        env=full_env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc


@pytest.mark.slow
def test_demo_trains_then_evaluates_as_the_readme_writes(repo_copy):
  _run(repo_copy, 'flan_t5x.train', '--gin_file=gin/demo.gin', '--gin.TRAIN_STEPS=3', '--gin.BATCH_SIZE=4',
       '--gin.EVAL_PERIOD=3', '--gin.EVAL_STEPS=1')
  assert (repo_copy / 'runs' / 'demo' / 'checkpoint_3').is_dir()
  config = (repo_copy / 'runs' / 'demo' / 'config.gin').read_text()
  assert f"'{repo_copy / 'runs' / 'demo'}'" in config or 'runs/demo' in config
  _run(repo_copy, 'flan_t5x.eval', '--gin_file=gin/eval_demo.gin', "--gin.CHECKPOINT_PATH='runs/demo/checkpoint_3'",
       '--gin.EVAL_MAX_EXAMPLES=4')
  results = json.loads((repo_copy / 'runs' / 'demo' / 'eval' / 'results.json').read_text())
  assert 'demo_support_zs' in json.dumps(results)
  # README "Coming from T5X": python -m flan_t5x.main --run_mode=eval --gin_file=gin/eval_demo.gin
  _run(repo_copy, 'flan_t5x.main', '--run_mode=eval', '--gin_file=gin/eval_demo.gin',
       "--gin.CHECKPOINT_PATH='runs/demo/checkpoint_3'", '--gin.EVAL_MAX_EXAMPLES=4')
  metrics = (repo_copy / 'runs' / 'demo' / 'eval' / 'inference_eval' / 'demo_support_zs-metrics.jsonl').read_text()
  assert len(metrics.splitlines()) == 2  # T5X's file: one line per evaluation, appended
  # README: python -m flan_t5x.convert to-upstream-t5x runs/demo runs/demo_t5x --gin_file=gin/demo_model.gin
  _run(repo_copy, 'flan_t5x.convert', 'to-upstream-t5x', 'runs/demo', 'runs/demo_t5x', '--gin_file=gin/demo_model.gin')
  assert (repo_copy / 'runs' / 'demo_t5x' / 'checkpoint_3').is_dir()


@pytest.mark.slow
def test_flan_mix_dialogsum_eval_heldout_and_infer_run_on_flan_t5x(repo_copy, tmp_path, tiny_spm):
  from tests.conftest import write_flan_layout  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  write_flan_layout(data)
  env = {'FLAN_DATA_DIR': str(data), 'FLAN_VOCAB_PATH': tiny_spm, 'TFDS_DATA_DIR': str(tmp_path / 'no_tfds')}
  # README: python -m flan_t5x.train --gin_file=gin/flan_mix.gin --gin.MODEL_DIR=...
  flan_mix = _run(repo_copy, 'flan_t5x.train', '--gin_file=gin/flan_mix.gin', "--gin.MODEL_DIR='runs/flan_mix'",
                  *TINY, *SHORT_TRAIN, env=env)
  assert 'training to step 2' in flan_mix.stdout
  assert (repo_copy / 'runs' / 'flan_mix' / 'checkpoint_2').is_dir()
  assert list((repo_copy / 'runs' / 'flan_mix' / 'inference_eval').iterdir())  # T5X's inference eval ran
  _run(repo_copy, 'flan_t5x.train', '--gin_file=gin/dialogsum.gin', "--gin.MODEL_DIR='runs/dialogsum'",
       *TINY, *SHORT_TRAIN, env=env)
  checkpoint = 'runs/dialogsum/checkpoint_2'
  _run(repo_copy, 'flan_t5x.eval', '--gin_file=gin/eval_heldout.gin', f"--gin.CHECKPOINT_PATH='{checkpoint}'",
       "--gin.EVAL_OUTPUT_DIR='runs/eval'", *TINY, '--gin.EVAL_MAX_EXAMPLES=2', env=env)
  results = (repo_copy / 'runs' / 'eval' / 'results.md').read_text()
  assert 'dialogsum_zs' in results
  _run(repo_copy, 'flan_t5x.infer', '--gin_file=gin/infer.gin', f"--gin.CHECKPOINT_PATH='{checkpoint}'",
       "--gin.INFER_OUTPUT_DIR='runs/infer_task'", *TINY, "--gin.MIXTURE_OR_TASK_NAME='dialogsum_zs'",
       "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}", env=env)
  lines = (repo_copy / 'runs' / 'infer_task' / 'predictions-00000-of-00001.jsonl').read_text().splitlines()
  assert lines and all('prediction' in json.loads(line) for line in lines)
  # README: predictions for a JSONL file of raw inputs (its paths as written; the checkpoint this test trained).
  inputs = ['Summarize: #Person1#: My order is late. #Person2#: I will check.', 'Rate this review: great shoes']
  (repo_copy / 'inputs.jsonl').write_text(''.join(json.dumps({'inputs': text}) + '\n' for text in inputs))
  _run(repo_copy, 'flan_t5x.infer', '--gin_file=gin/infer_jsonl.gin', f"--gin.CHECKPOINT_PATH='{checkpoint}'",
       "--gin.INFER_INPUT_PATH='inputs.jsonl'", "--gin.INFER_OUTPUT_DIR='runs/infer'", *TINY, env=env)
  output = repo_copy / 'runs' / 'infer' / 'predictions-00000-of-00001.jsonl'
  rows = [json.loads(line) for line in output.read_text().splitlines()]
  assert [row['input'] for row in rows] == inputs and all(isinstance(row['prediction'], str) for row in rows)


@pytest.mark.slow
def test_flan2022_trains_on_flan_t5x(repo_copy, tmp_path, tiny_spm):
  from flan_tasks import synthetic_collection  # pylint: disable=g-import-not-at-top
  collection = synthetic_collection.write_collection(str(tmp_path / "collection"), 20, 400).root
  _run(repo_copy, 'flan_t5x.train', '--gin_file=gin/flan2022.gin', f"--gin.FLAN_COLLECTION_DIR='{collection}'",
       "--gin.MODEL_DIR='runs/flan2022'", *TINY, *SHORT_TRAIN, env={'FLAN_VOCAB_PATH': tiny_spm})
  assert (repo_copy / 'runs' / 'flan2022' / 'checkpoint_2').is_dir()


T5X_FORM_USER_FILE = """
from __gin__ import dynamic_registration

import __main__ as train_script
import seqio
import flan_tasks
from t5x import adafactor
from t5x import partitioning
from t5x import trainer
from t5x import utils
from t5x.examples.t5 import network

include 't5x/examples/t5/t5_1_1/tiny.gin'
include 't5x/configs/runs/finetune.gin'

MIXTURE_OR_TASK_NAME = 'demo_support_zs'
TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 32}
TRAIN_STEPS = 4
DROPOUT_RATE = 0.0
INITIAL_CHECKPOINT_PATH = None
USE_CACHED_TASKS = False
BATCH_SIZE = 4
EVAL_PERIOD = 4
EVAL_STEPS = 1
EVALUATOR_NUM_EXAMPLES = 2
VOCABULARY = @seqio.ByteVocabulary()
network.T5Config.vocab_size = 384
network.T5Config.dtype = 'float32'
utils.SaveCheckpointConfig.period = 2
partitioning.PjitPartitioner.num_partitions = 1
adafactor.Adafactor.decay_rate = 0.8
trainer.Trainer.num_microbatches = 2
utils.create_learning_rate_scheduler.base_learning_rate = 0.01
"""


@pytest.mark.slow
def test_a_t5x_form_user_file_runs_on_flan_t5x(tmp_path):
  (tmp_path / 'my_task.gin').write_text(T5X_FORM_USER_FILE)
  model_dir = tmp_path / 'model'
  _run(tmp_path, 'flan_t5x.train', '--gin_file=my_task.gin', f"--gin.MODEL_DIR='{model_dir}'",
       env={'PYTHONPATH': str(REPO)})
  assert sorted(p.name for p in model_dir.glob('checkpoint_*')) == ['checkpoint_2', 'checkpoint_4']
  operative = (model_dir / 'operative_config.gin').read_text()
  assert 'num_microbatches = 2' in operative
  assert list((model_dir / 'inference_eval').iterdir())


@pytest.mark.parametrize('binding, named', [
    ("utils.RestoreCheckpointConfig.mode = 'all'", 'utils.RestoreCheckpointConfig.mode'),
    ("adafactor.Adafactor.logical_factor_rules = None", 'adafactor.Adafactor.logical_factor_rules'),
    ('seqio.Evaluator.shuffle = True', 'seqio.Evaluator'),
])
def test_an_unsupported_t5x_binding_fails_at_parse_time_naming_it(binding, named):
  bindings = ['from __gin__ import dynamic_registration', 'import seqio', 'from t5x import adafactor',
              'from t5x import utils', binding]
  with pytest.raises(ValueError, match=named.replace('.', r'\.')) as error:
    gin_utils.parse_gin(['gin/demo.gin'], bindings, finalize=False)
  assert 'flan_t5x' in str(error.value)


def test_an_unserved_t5x_module_is_named():
  with pytest.raises(ValueError, match='flan_t5x serves these T5X modules'):
    gin_utils.parse_gin(['gin/demo.gin'], ['from t5x import state_utils'], finalize=False)


def test_size_files_change_the_model_of_a_run_file():
  gin_utils.parse_gin(['gin/flan_mix.gin', 'gin/sizes/large.gin'], ['MODEL_DIR = "/tmp/x"'], finalize=False)
  model = gin.query_parameter('%MODEL').scoped_configurable_fn()
  assert (model.config.emb_dim, model.config.num_encoder_layers, model.config.mlp_dim) == (1024, 24, 2816)
  assert gin.query_parameter('%INITIAL_CHECKPOINT_PATH').endswith('flan_t5_large/checkpoint_1164000')
  assert gin.query_parameter('%DROPOUT_RATE') == 0.05


def test_train_steps_and_relative_steps_are_exclusive(tmp_path):
  from flan_t5x import training as train_lib  # pylint: disable=g-import-not-at-top
  import helpers  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='set exactly one'):
    train_lib.train(model=helpers.tiny_model(), model_dir=str(tmp_path), train_dataset_cfg=helpers.dataset_cfg(),
                    total_steps=5, relative_steps=5)
  assert not list(tmp_path.iterdir())


MY_SUPPORT_TASK = """
from __gin__ import dynamic_registration
import flan_tasks
MIXTURE_OR_TASK_NAME = @flan_tasks.add_instruction_task()
flan_tasks.add_instruction_task:
  name = 'support_chats'
  source_files = {'train': '%(data)s/chats.train.jsonl', 'validation': '%(data)s/chats.dev.jsonl'}
  input_field = 'chat'
  target_field = 'summary'
  family = 'dialogue_summarization'
VOCAB_PATH = '%(vocab)s'  # sets the model's and flan_tasks' vocabulary
"""


@pytest.mark.slow
def test_your_own_task_trains_then_evaluates_as_the_readme_writes(repo_copy, tmp_path, tiny_spm):
  from tests.conftest import DIALOGUES  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  data.mkdir()
  for split in ('train', 'dev'):
    (data / f'chats.{split}.jsonl').write_text(''.join(
        json.dumps({'chat': d['dialogue'], 'summary': d['summary']}) + '\n' for d in DIALOGUES))
  (repo_copy / 'my_support_task.gin').write_text(MY_SUPPORT_TASK % {'data': data, 'vocab': tiny_spm})
  _run(repo_copy, 'flan_t5x.train', '--gin_file=gin/dialogsum.gin', '--gin_file=my_support_task.gin',
       "--gin.MODEL_DIR='runs/support'", "--gin.INITIAL_CHECKPOINT_PATH='/models/flan-t5-base'",
       '--gin.TRAIN_STEPS_RELATIVE=1000', *TINY, *SHORT_TRAIN, '--gin.INITIAL_CHECKPOINT_PATH=None')
  assert (repo_copy / 'runs' / 'support' / 'checkpoint_2').is_dir()
  _run(repo_copy, 'flan_t5x.eval', '--gin_file=gin/eval_heldout.gin', '--gin_file=my_support_task.gin',
       "--gin.CHECKPOINT_PATH='runs/support'", "--gin.EVAL_OUTPUT_DIR='runs/eval_support'", *TINY,
       '--gin.EVAL_MAX_EXAMPLES=4')
  results = json.loads((repo_copy / 'runs' / 'eval_support' / 'results.json').read_text())
  assert 'support_chats_zs' in json.dumps(results) and 'dialogsum' not in json.dumps(results)

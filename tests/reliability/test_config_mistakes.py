"""Configuration mistakes fail before any work starts, with a message that says what to change."""

import os
import subprocess
import sys

import gin
import pytest

from flan_t5x import config_checks
from flan_t5x import gin_utils
from flan_t5x import train as train_lib

import faults
import helpers


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)


def _bindings(model_dir, **overrides):
  values = {'MODEL_DIR': f"'{model_dir}'", 'MIXTURE_OR_TASK_NAME': "'engine_test_copy'",
            'MIXTURE_OR_TASK_MODULE': "'tiny_task'", 'TASK_FEATURE_LENGTHS': "{'inputs': 32, 'targets': 16}",
            'TRAIN_STEPS': '2', 'BATCH_SIZE': '4', 'USE_CACHED_TASKS': 'False', 'INITIAL_CHECKPOINT_PATH': 'None',
            'EVAL_PERIOD': 'None', 'RANDOM_SEED': '0', 'train_script.train.use_progress_bar': 'False'}
  values.update(overrides)
  return [f'{k} = {v}' for k, v in values.items() if v is not None]


def _parse_and_train(tmp_path, **overrides):
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  model_dir = tmp_path / 'run'
  gin_utils.parse_gin([str(model_gin), 'gin/runs/finetune.gin'], _bindings(model_dir, **overrides),
                      strict_macros=True)  # as the jobs' command lines parse
  return model_dir, lambda: gin.get_configurable(train_lib.train)()


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
  monkeypatch.chdir(gin_utils.REPO_ROOT)


def test_misspelled_macro_fails_at_parse_with_the_likely_name(tmp_path):
  with pytest.raises(ValueError, match=r'--gin.TRAIN_STPES sets a macro that no gin file defines\. '
                                       r'Did you mean TRAIN_STEPS\?'):
    _parse_and_train(tmp_path, TRAIN_STPES='2')


def test_misspelled_binding_fails_at_parse(tmp_path):
  with pytest.raises(ValueError, match=r"'train_script.train' doesn't have a parameter named 'totl_steps'"):
    _parse_and_train(tmp_path, **{'train_script.train.totl_steps': '2'})


@pytest.mark.parametrize('override, message', [
    ({'TRAIN_STEPS': "'2'"}, r"train.total_steps must be int, got str '2'"),
    ({'BATCH_SIZE': '4.5'}, r'DatasetConfig.batch_size must be int, got float 4.5'),
    ({'TASK_FEATURE_LENGTHS': "{'inputs': '32', 'targets': 16}"},
     r'DatasetConfig.task_feature_lengths must be Mapping\[str, int\]'),
    ({'checkpoints.SaveCheckpointConfig.keep': "'3'"}, r'SaveCheckpointConfig.keep must be int \| None'),
    ({'RANDOM_SEED': 'True'}, r'train.random_seed must be int \| None, got bool'),
])
def test_wrong_types_fail_before_model_dir_is_touched(tmp_path, override, message):
  model_dir, run = _parse_and_train(tmp_path, **override)
  with pytest.raises(TypeError, match=message):
    run()
  assert not model_dir.exists()


def test_unknown_task_name_suggests_registered_ones(tmp_path):
  model_dir, run = _parse_and_train(tmp_path, MIXTURE_OR_TASK_NAME="'engine_test_cpy'")
  with pytest.raises(ValueError, match=r"Unknown task or mixture 'engine_test_cpy' \(MIXTURE_OR_TASK_NAME\)\. "
                                       r'Did you mean engine_test_copy'):
    run()
  assert not any(model_dir.glob('checkpoint_*'))


def test_missing_required_macros_are_listed_by_the_command_line_job(tmp_path):
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  args = [f'--gin_bindings={b}' for b in _bindings(tmp_path / 'run', TRAIN_STEPS=None, MODEL_DIR=None)]
  done = subprocess.run([sys.executable, '-m', 'flan_t5x.train', f'--gin_file={model_gin}',
                         '--gin_file=gin/runs/finetune.gin'] + args, env=faults.child_env(), capture_output=True,
                        text=True, timeout=300, cwd=gin_utils.REPO_ROOT)
  assert done.returncode != 0
  assert 'Required macro(s) not set: MODEL_DIR, TRAIN_STEPS. Pass them, e.g. --gin.MODEL_DIR=...' in done.stderr, (
      done.stderr[-2000:])


def test_required_macro_check_and_helper_macros():
  with pytest.raises(ValueError, match='Required macro'):
    config_checks.check_required_macros({'A': '%gin.REQUIRED', 'B': '3'})
  config_checks.check_required_macros({'A': "'set'"})
  # A macro defined on the command line and used by a later binding is not a typo.
  config_checks.check_macro_overrides(['LR = 0.1', 'schedules.f.rate = %LR'], {})
  with pytest.raises(ValueError, match='no gin file defines'):
    config_checks.check_macro_overrides(['LR = 0.1'], {'LR_RATE': '1'})


def test_initial_checkpoint_of_another_model_size_is_refused_before_training(tmp_path):
  source = tmp_path / 'source'
  faults.train(source, 1)
  target = tmp_path / 'target'
  with pytest.raises(ValueError, match=r'saved by a model of another size or structure .*: params/.*shape.*emb_dim'):
    helpers.run_training(target, 2, model=helpers.tiny_model(emb_dim=64), initial_checkpoint=str(source))
  assert not any(target.glob('checkpoint_*'))

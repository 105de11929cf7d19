"""Configuration mistakes fail before any work starts, with a message that says what to change."""

import os
import pathlib
import subprocess
import sys

import gin
import pytest

from flan_t5x import config_checks
from flan_t5x import gin_utils
from flan_t5x import run_lock
from flan_t5x import training as train_lib

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
                                       r'Did you mean TRAIN_STEPS[,?]'):
    _parse_and_train(tmp_path, TRAIN_STPES='2')


def test_misspelled_binding_fails_at_parse(tmp_path):
  with pytest.raises(ValueError, match=r"'train_script.train' doesn't have a parameter named 'totl_steps'"):
    _parse_and_train(tmp_path, **{'train_script.train.totl_steps': '2'})


@pytest.mark.parametrize('override, message', [
    ({'TRAIN_STEPS': "'2'"}, r"train.total_steps must be int \| None, got str '2'"),
    ({'BATCH_SIZE': '4.5'}, r'DatasetConfig.batch_size must be int, got float 4.5'),
    ({'TASK_FEATURE_LENGTHS': "{'inputs': '32', 'targets': 16}"},
     r'DatasetConfig.task_feature_lengths must be Optional\[Mapping\[str, int\]\]'),
    ({'utils.SaveCheckpointConfig.keep': "'3'"}, r'SaveCheckpointConfig.keep must be int \| None'),
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_initial_checkpoint_of_another_model_size_is_refused_before_training(tmp_path):
  source = tmp_path / 'source'
  faults.train(source, 1)
  target = tmp_path / 'target'
  with pytest.raises(ValueError, match=r'saved by a model of another size or structure .*: params/.*shape.*emb_dim'):
    helpers.run_training(target, 2, model=helpers.tiny_model(emb_dim=64), initial_checkpoint=str(source))
  assert not any(target.glob('checkpoint_*'))


@pytest.mark.parametrize('override, message', [
    ({'TRAIN_STEPS': '-5'}, r'TRAIN_STEPS \(train.total_steps\) must be at least 1, got -5'),
    ({'TRAIN_STEPS': '0'}, r'TRAIN_STEPS \(train.total_steps\) must be at least 1, got 0'),
    ({'BATCH_SIZE': '-4'}, r'BATCH_SIZE \(train/DatasetConfig.batch_size\) must be at least 1, got -4'),
    ({'BATCH_SIZE': '0'}, r'BATCH_SIZE \(train/DatasetConfig.batch_size\) must be at least 1, got 0'),
    ({'utils.SaveCheckpointConfig.period': '0'},
     r'utils.SaveCheckpointConfig.period must be a number of steps of at least 1 .*, got 0'),
    ({'TASK_FEATURE_LENGTHS': "{'inputs': -1, 'targets': 16}"},
     r"TASK_FEATURE_LENGTHS \(train/DatasetConfig.task_feature_lengths\) 'inputs' must be a number of tokens of "
     r'at least 1, got -1'),
])
def test_values_no_run_can_use_fail_before_model_dir_is_created(tmp_path, override, message):
  model_dir, run = _parse_and_train(tmp_path, **override)
  with pytest.raises(ValueError, match=message):
    run()
  assert not model_dir.exists()


@pytest.mark.parametrize('name, value, message', [
    ('utils.create_learning_rate_scheduler.base_learning_rate', "'x'",
     r"base_learning_rate = 'x': expected a number \(without quotes\)"),
    ('utils.create_learning_rate_scheduler.warmup_steps', '-10',
     r'warmup_steps = -10: expected a whole number of steps, at least 0'),
    ('utils.create_learning_rate_scheduler.factors', "'constant * rsqrt_decy'", r"unknown factors \['rsqrt_decy'\]"),
])
def test_learning_rate_settings_fail_at_parse_before_model_dir(tmp_path, name, value, message):
  """Before: a JAX TypeError at the first step, MODEL_DIR already created."""
  with pytest.raises(gin_utils.ConfigError, match=message):
    _parse_and_train(tmp_path, **{name: value})
  assert not (tmp_path / 'run').exists()


def test_misspelled_macro_inside_a_gin_file_fails_at_parse_with_file_and_line(tmp_path):
  run_gin = tmp_path / 'my_run.gin'
  run_gin.write_text("include 'gin/runs/finetune.gin'\n\nTRAIN_STEPZ = 3\n")
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  with pytest.raises(ValueError, match=rf'^{run_gin}:3: macro TRAIN_STEPZ is defined but no binding uses '
                                       r'%TRAIN_STEPZ\. Did you mean TRAIN_STEPS\?'):
    gin_utils.parse_gin([str(model_gin), str(run_gin)], _bindings(tmp_path / 'run'), strict_macros=True)


def test_unclosed_bracket_in_a_gin_file_names_the_file(tmp_path):
  broken = tmp_path / 'broken.gin'
  broken.write_text("include 'gin/runs/finetune.gin'\nTRAIN_STEPS = 3\nBATCH_SIZE = (4\n")  # gin: tokenize.TokenError
  with pytest.raises(ValueError, match=rf'^{broken} \(or a file it includes\): gin cannot parse it: .*unclosed'):
    gin_utils.parse_gin([str(broken)], [], strict_macros=True)


def _snapshot(directory):
  """Every file but the run lock (which records its last holder: the refused run took it to read the checkpoint)."""
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob('*') if p.is_file() and not p.name.startswith('.lock-')}


@pytest.mark.slow
def test_resuming_with_another_batch_size_is_refused_and_writes_nothing(tmp_path):
  model_dir = tmp_path / 'run'
  helpers.run_training(model_dir, 1, batch_size=4)
  before = _snapshot(model_dir)
  with pytest.raises(ValueError, match=rf'{model_dir} was trained with BATCH_SIZE=4; this run has BATCH_SIZE=8\. '
                                       r'.*--gin.BATCH_SIZE=4'):
    helpers.run_training(model_dir, 2, batch_size=8)
  assert _snapshot(model_dir) == before
  step, _ = helpers.run_training(model_dir, 2, batch_size=4)
  assert step == 2


def test_a_refused_second_trainer_leaves_config_gin_alone(tmp_path):
  """The command-line job writes MODEL_DIR/config.gin only once its run is accepted."""
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  (model_dir / 'config.gin').write_text('# the running job\n')
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  args = [f'--gin_bindings={b}' for b in _bindings(model_dir, BATCH_SIZE='16')]
  with run_lock.RunLock(str(model_dir)):
    done = subprocess.run([sys.executable, '-m', 'flan_t5x.train', f'--gin_file={model_gin}',
                           '--gin_file=gin/runs/finetune.gin'] + args, env=faults.child_env(), capture_output=True,
                          text=True, timeout=300, cwd=gin_utils.REPO_ROOT)
  assert done.returncode != 0
  assert 'RunLockedError: Another training process is using MODEL_DIR' in done.stderr, done.stderr[-2000:]
  assert (model_dir / 'config.gin').read_text() == '# the running job\n'
  assert sorted(p.name for p in model_dir.iterdir()) == ['config.gin']  # the holder's lock file went with it


@pytest.mark.parametrize('files, bindings, job, message', [
    (['gin/demo.gin'], ['MODEL_DIR = runs/x'], 'train',
     '--gin.MODEL_DIR=runs/x: a string needs quotes inside the flag, e.g. --gin.MODEL_DIR="\'runs/x\'"'),
    (['gin/dem.gin'], [], 'train', 'gin/dem.gin: no such gin file (looked in the current directory, the '
     '--gin_search_paths and the repository root). Did you mean gin/demo.gin'),
    (['gin/demo.gin'], [], 'eval', 'gin/demo.gin configures the train job (train_script.train), not eval: run '
     'python -m flan_t5x.train with it, or give python -m flan_t5x.eval a eval file such as gin/eval_demo.gin.'),
    (['gin/demo.gin'], ['checkpoints.SaveCheckpointConfig.period = 5'], 'train',
     "no configurable 'checkpoints.SaveCheckpointConfig': it is utils.SaveCheckpointConfig; add `from t5x import "
     "utils`"),
])
def test_gin_mistakes_get_one_line_with_the_fix(files, bindings, job, message):
  gin.clear_config(clear_constants=True)
  try:
    with pytest.raises(gin_utils.ConfigError) as refused:
      gin_utils.parse_gin(files, bindings, job=job, finalize=False, strict_macros=True)
  finally:
    gin.clear_config(clear_constants=True)
  assert message in str(refused.value) and '\n' not in str(refused.value), str(refused.value)


def test_a_gin_mistake_on_the_command_line_is_one_error_line_without_traceback(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'flan_t5x.train', '--gin_file=gin/demo.gin', '--gin.MODEL_DIR=runs/x'],
                        env=faults.child_env(), capture_output=True, text=True, timeout=300, cwd=gin_utils.REPO_ROOT)
  assert done.returncode == 2
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: --gin.MODEL_DIR=runs/x: a string needs quotes') and 'Traceback' not in done.stderr
  assert not (pathlib.Path(gin_utils.REPO_ROOT) / 'runs' / 'x').exists()


@pytest.mark.slow
def test_a_job_failing_on_the_users_input_is_one_error_line_and_the_traceback_needs_verbosity(tmp_path):
  """Beyond gin: a CHECKPOINT_PATH that holds no checkpoint ends as `error: <class>: <message>`, exit 1;
  --verbosity (README, Training with flan_t5x: Errors) brings the traceback back."""
  missing = tmp_path / 'no_checkpoint'
  command = [sys.executable, '-m', 'flan_t5x.eval', '--gin_file=gin/eval_demo.gin',
             f"--gin.CHECKPOINT_PATH='{missing}'", f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'"]
  done = subprocess.run(command, env=faults.child_env(), capture_output=True, text=True, timeout=300,
                        cwd=gin_utils.REPO_ROOT)
  assert done.returncode == 1, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: FileNotFoundError: ') and str(missing) in last, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr and 'In call to configurable' not in done.stderr
  verbose = subprocess.run(command + ['--verbosity=0'], env=faults.child_env(), capture_output=True, text=True,
                           timeout=300, cwd=gin_utils.REPO_ROOT)
  assert verbose.returncode == 1 and 'Traceback' in verbose.stderr


def test_a_data_file_missing_its_target_column_fails_before_model_dir_naming_file_and_line(tmp_path):
  """The user's CSV lacks the `summary` column the task reads: found before the model is built or
  MODEL_DIR (config.gin) is written, as a BadRowError with the file and the row's line."""
  import flan_tasks  # pylint: disable=g-import-not-at-top
  csv_path = tmp_path / 'chats.csv'
  csv_path.write_text('chat,summry\n"Ann: Is it fixed?\nBob: Yes.",It was fixed.\n', encoding='utf-8')
  name = flan_tasks.add_instruction_task('mistake_chats', str(csv_path), 'chat', 'summary',
                                         family='dialogue_summarization', vocabulary=helpers.tiny_task.VOCAB)
  model_dir, run = _parse_and_train(tmp_path, MIXTURE_OR_TASK_NAME=f"'{name}'", MIXTURE_OR_TASK_MODULE='None')
  with pytest.raises(ValueError, match=rf"{csv_path}:2: .*summary"):
    run()
  assert not model_dir.exists()

"""TRAIN_STEPS counts the initial checkpoint's steps (T5X): a run that would train no step is an error
before any work, and a finished MODEL_DIR is left as it is, saying so."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flan_t5x import checkpoint_import
from flan_t5x import lora

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))


def _params(**config):
  return jax.tree.map(np.asarray, helpers.make_trainer(helpers.tiny_model(**config)).init_state().params)


@pytest.mark.parametrize('total_steps', [4, 12])
def test_train_steps_at_or_below_the_initial_checkpoint_step_is_an_error(tmp_path, total_steps):
  base = checkpoint_import.save_params_checkpoint(_params(), str(tmp_path / 'base'), step=12)
  with pytest.raises(ValueError) as err:
    helpers.run_training(tmp_path / 'run', total_steps, initial_checkpoint=base)
  message = str(err.value)
  assert f'TRAIN_STEPS={total_steps} would train no step' in message and 'is at step 12' in message
  assert "TRAIN_STEPS counts the initial checkpoint's steps, as in T5X" in message
  assert f'--gin.TRAIN_STEPS={12 + total_steps}' in message
  assert not (tmp_path / 'run').exists()  # nothing written


def test_lora_run_at_or_below_its_base_step_is_an_error(tmp_path):
  base = checkpoint_import.save_params_checkpoint(_params(), str(tmp_path / 'base'), step=12)
  model = helpers.tiny_model(lora=lora.LoraConfig(rank=4))
  with pytest.raises(ValueError, match='TRAIN_STEPS=4 would train no step: INITIAL_CHECKPOINT_PATH .* at step 12'):
    helpers.run_training(tmp_path / 'lora', 4, model=model, initial_checkpoint=base)
  assert not (tmp_path / 'lora').exists()
  # Above the base's step it trains (adapters continue the base's step count, as the full model would).
  step, history = helpers.run_training(tmp_path / 'lora', 13, model=model, initial_checkpoint=base)
  assert step == 13 and [h['step'] for h in history] == [13]


def test_fresh_run_of_zero_steps_is_an_error(tmp_path):
  with pytest.raises(ValueError, match=r'TRAIN_STEPS \(train.total_steps\) must be at least 1, got 0'):
    helpers.run_training(tmp_path / 'run', 0)
  assert not (tmp_path / 'run').exists()


def test_finished_model_dir_is_a_no_op_that_says_so(tmp_path, capsys):
  assert helpers.run_training(tmp_path, 2)[0] == 2
  mtimes = lambda: {name: os.stat(tmp_path / name).st_mtime_ns for name in os.listdir(tmp_path)
                    if not name.startswith('.lock')}  # the run lock is taken by every run
  before = mtimes()
  for total_steps in (2, 1):
    capsys.readouterr()
    assert helpers.run_training(tmp_path, total_steps) == (2, [])
    out = capsys.readouterr().out
    assert f'already holds step 2 (TRAIN_STEPS={total_steps}): nothing to train' in out
    assert 'done at step' not in out
  assert mtimes() == before


@pytest.mark.slow
def test_command_line_refuses_before_writing_anything(tmp_path):
  base = checkpoint_import.save_params_checkpoint(_params(), str(tmp_path / 'base'), step=12)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([helpers.REPO_ROOT, HERE, os.environ.get('PYTHONPATH', '')]))
  model_gin = tmp_path / 'tiny.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  cmd = [sys.executable, '-m', 'flan_t5x.train', f'--gin_file={model_gin}', '--gin_file=gin/runs/finetune.gin',
         f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.MIXTURE_OR_TASK_NAME='engine_test_copy'",
         "--gin.MIXTURE_OR_TASK_MODULE='tiny_task'", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 16}",
         '--gin.TRAIN_STEPS=4', '--gin.USE_CACHED_TASKS=False', f"--gin.INITIAL_CHECKPOINT_PATH='{base}'"]
  proc = subprocess.run(cmd, cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'TRAIN_STEPS=4 would train no step' in proc.stderr and 'at step 12' in proc.stderr, proc.stderr[-3000:]
  assert not (tmp_path / 'run').exists()  # not even config.gin

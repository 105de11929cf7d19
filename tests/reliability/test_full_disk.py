"""A save that fails (file too large / full disk) stops training with a clear message, a read-only
MODEL_DIR is refused before training; the previous checkpoint stays intact and a restart resumes.

No tmpfs without root privileges here, so:
- "full disk": RLIMIT_FSIZE set in the child at its first training step (writes past the limit
  fail with EFBIG, as they fail with ENOSPC on a full disk: tensorstore's write inside orbax's save);
- read-only: MODEL_DIR bind-mounted read-only onto itself in a private mount namespace
  (`unshare -m`, EROFS; chmod does not stop root); skipped where unshare is not permitted.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from flan_t5x import checkpoint_integrity
from flan_t5x import gin_utils

import faults
import helpers

_LIMIT_BYTES = 64 * 1024  # far below the tiny model's state files (100-300 kB each); TensorBoard events are smaller


def _errors(stderr: str) -> str:
  """The child's error lines (orbax's threads add pages of tracebacks at exit)."""
  return '\n'.join(line for line in stderr.splitlines() if 'Error' in line and 'Event loop' not in line)[-4000:]


def _assert_resumes_from_intact(model_dir, capsys, total_steps):
  last = faults.steps_in(model_dir)[-1]
  checkpoint_integrity.verify(str(model_dir / f'checkpoint_{last}'))
  step, _ = faults.train(model_dir, total_steps)
  assert step == total_steps
  assert f'resumed from {model_dir} at step {last}' in capsys.readouterr().out


@pytest.mark.slow
def test_file_size_limit_stops_training_and_keeps_the_previous_checkpoint(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  faults.train(model_dir, 2)
  capsys.readouterr()
  child = subprocess.run(faults.child_train_command(model_dir, 4, file_size_limit=_LIMIT_BYTES),
                         env=faults.child_env(), capture_output=True, text=True, timeout=600)
  assert child.returncode != 0, (child.stdout[-2000:], _errors(child.stderr))
  assert 'CheckpointSaveError: Saving checkpoint_3' in child.stderr, _errors(child.stderr)
  assert 'File too large' in child.stderr
  assert f'The last complete checkpoint, {model_dir}/checkpoint_2, is intact' in child.stderr
  assert faults.steps_in(model_dir) == [1, 2]
  _assert_resumes_from_intact(model_dir, capsys, 4)
  assert faults.steps_in(model_dir) == [1, 2, 3, 4]


_READ_ONLY = r'''
set -e
mount --bind "$1" "$1"
mount -o remount,bind,ro "$1"
shift
exec "$@"
'''


def _can_remount() -> bool:
  if not shutil.which('unshare'):
    return False
  probe = subprocess.run(['unshare', '-m', 'sh', '-c', 'mount --bind / / && mount -o remount,bind,ro /'],
                         capture_output=True)
  return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_remount(), reason='no private mount namespace (unshare -m) here')
def test_read_only_model_dir_is_refused_before_training_and_a_writable_restart_resumes(tmp_path, capsys):
  """Remounting read-only while training fails here ('mount point is busy': the run holds files open
  for writing), so the run starts on a read-only MODEL_DIR: it is refused before any work."""
  model_dir = tmp_path / 'run'
  faults.train(model_dir, 2)
  capsys.readouterr()
  command = ['unshare', '-m', 'sh', '-c', _READ_ONLY, 'sh', str(model_dir)]
  child = subprocess.run(command + faults.child_train_command(model_dir, 4), env=faults.child_env(),
                         capture_output=True, text=True, timeout=600)
  assert child.returncode != 0, (child.stdout[-2000:], _errors(child.stderr))
  assert f'Cannot create the run lock {model_dir}/.lock-process_0-of-1: Read-only file system' in child.stderr, (
      _errors(child.stderr))
  assert 'MODEL_DIR must be writable' in child.stderr
  assert faults.steps_in(model_dir) == [1, 2]
  _assert_resumes_from_intact(model_dir, capsys, 4)


@pytest.mark.slow
def test_model_dir_turning_unwritable_mid_run_fails_at_once_with_the_permission_error(tmp_path, capsys):
  """Orbax created step directories in its save thread: the save then waited 300 s on a barrier and
  failed with 'TimeoutError: Timeout waiting for key …step_directory_creation', the cause 50 lines up."""
  for parent in (tmp_path, *tmp_path.parents):  # let uid nobody reach MODEL_DIR (pytest makes its root 0700)
    if str(parent).startswith('/tmp/') and parent.stat().st_uid == os.geteuid():
      parent.chmod(parent.stat().st_mode | 0o005)
  model_dir = tmp_path / 'run'
  faults.train(model_dir, 2)
  capsys.readouterr()
  tick = time.monotonic()
  child = subprocess.run(faults.child_loses_permission_command(model_dir, 4, at_step=1), env=faults.child_env(),
                         capture_output=True, text=True, timeout=600)
  assert child.returncode != 0, (child.stdout[-2000:], _errors(child.stderr))
  assert time.monotonic() - tick < 200  # a 300 s barrier wait is gone (start-up and compile take the rest)
  assert 'CheckpointSaveError: Saving checkpoint_3' in child.stderr, _errors(child.stderr)
  assert 'PermissionError' in _errors(child.stderr).split('CheckpointSaveError')[-1], _errors(child.stderr)
  assert 'Timeout' not in child.stderr
  assert f'The last complete checkpoint, {model_dir}/checkpoint_2, is intact' in child.stderr
  assert faults.steps_in(model_dir) == [1, 2]
  _assert_resumes_from_intact(model_dir, capsys, 4)


@pytest.mark.skipif(not _can_remount(), reason='no private mount namespace (unshare -m) here')
def test_read_only_model_dir_gives_the_lock_message_from_the_command_line_job(tmp_path):
  """The job used to write MODEL_DIR/config.gin first and failed with a raw OSError on config.gin.tmp…."""
  from test_config_mistakes import _bindings  # pylint: disable=g-import-not-at-top
  import helpers  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  job = [sys.executable, '-m', 'flan_t5x.train', f'--gin_file={model_gin}', '--gin_file=gin/runs/finetune.gin'] + [
      f'--gin_bindings={b}' for b in _bindings(model_dir)]
  child = subprocess.run(['unshare', '-m', 'sh', '-c', _READ_ONLY, 'sh', str(model_dir)] + job,
                         env=faults.child_env(), capture_output=True, text=True, timeout=600, cwd=faults.REPO)
  assert child.returncode != 0
  assert f'Cannot create the run lock {model_dir}/.lock-process_0-of-1: Read-only file system' in child.stderr, (
      _errors(child.stderr))
  assert 'config.gin' not in _errors(child.stderr)


@pytest.mark.slow
def test_a_full_disk_on_the_command_line_ends_with_the_error_line(tmp_path):
  """The command-line job: the CheckpointSaveError is the last line the user sees, not followed by the
  save threads' shutdown noise (`Event loop is closed`, `sys.meta_path is None`, ...)."""
  import resource  # pylint: disable=g-import-not-at-top
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  model_dir = tmp_path / 'run'
  values = {'MODEL_DIR': f"'{model_dir}'", 'MIXTURE_OR_TASK_NAME': "'engine_test_copy'",
            'MIXTURE_OR_TASK_MODULE': "'tiny_task'", 'TASK_FEATURE_LENGTHS': "{'inputs': 32, 'targets': 16}",
            'TRAIN_STEPS': '2', 'BATCH_SIZE': '4', 'USE_CACHED_TASKS': 'False', 'INITIAL_CHECKPOINT_PATH': 'None',
            'EVAL_PERIOD': 'None', 'RANDOM_SEED': '0', 'train_script.train.use_progress_bar': 'False'}
  limit = 64 * 1024  # the tiny model's parameter files are larger: every save fails with EFBIG
  child = subprocess.run(
      [sys.executable, '-m', 'flan_t5x.train', f'--gin_file={model_gin}', '--gin_file=gin/runs/finetune.gin']
      + [f'--gin.{k}={v}' for k, v in values.items()], env=faults.child_env(), capture_output=True, text=True,
      timeout=600, cwd=gin_utils.REPO_ROOT, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
  assert child.returncode == 1, child.stderr[-3000:]
  last = child.stderr.strip().splitlines()[-1]
  assert last.startswith('error: CheckpointSaveError: Saving checkpoint_'), child.stderr[-3000:]
  # orbax's own save threads may log the failure (and a closed event loop) while the save fails, before the
  # error line; what must not appear is the interpreter-shutdown noise, which would come after it.
  assert 'sys.meta_path is None' not in child.stderr
  assert 'Event loop is closed' not in child.stderr.split('error: CheckpointSaveError')[-1]

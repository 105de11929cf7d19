"""keep-N deletes old checkpoints after each save; a deletion that fails (an immutable file, a
read-only directory) is its own warning naming that checkpoint, never a failed save of the new one."""
import os
import shutil
import subprocess

import pytest

from flan_t5x import checkpoint_integrity

import faults
import helpers


def _immutable(path, on: bool) -> bool:
  """chattr +i / -i (ext4, root); False where the file system or the user cannot."""
  if shutil.which('chattr') is None:
    return False
  return subprocess.run(['chattr', '+i' if on else '-i', str(path)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_failed_deletion_of_an_old_checkpoint_is_a_warning_naming_it(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  helpers.run_training(model_dir, 2, keep=2)
  victim = faults.largest_file(model_dir / 'checkpoint_1' / 'state')
  if not _immutable(victim, True):
    pytest.skip('chattr +i is not available here (needs ext4 and root)')
  try:
    step, _ = helpers.run_training(model_dir, 4, keep=2)
  finally:
    _immutable(victim, False)
  out = capsys.readouterr().out
  assert step == 4
  assert 'could not delete the old checkpoint' in out and 'checkpoint_1' in out
  assert 'Saving checkpoint' not in out
  for kept in (3, 4):
    step_dir = str(model_dir / f'checkpoint_{kept}')
    assert checkpoint_integrity.has_manifest(step_dir) and checkpoint_integrity.problems(step_dir) == []
  assert os.path.exists(victim)

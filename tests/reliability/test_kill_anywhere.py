"""Kill anywhere, short: SIGKILL inside a checkpoint save and during start-up, restart each time; the
run resumes from the newest complete checkpoint every time and ends with the parameters and losses
of an uninterrupted run (bench/soak_kill.py does the same with 20+ kills)."""

import subprocess

import pytest

import soak_kill  # bench/soak_kill.py (conftest puts bench/ on the path)

STEPS = 12


@pytest.mark.slow
def test_killed_in_a_save_and_at_startup_then_resumed_equals_uninterrupted(tmp_path):
  reference_dir, soaked_dir = tmp_path / 'reference', tmp_path / 'soaked'
  done = subprocess.run(soak_kill.command(reference_dir, STEPS), cwd=soak_kill.ROOT, env=soak_kill.child_env(),
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  result = soak_kill.run_soak(soaked_dir, STEPS, kills=2, seed=0, modes=('save', 'startup'), say=lambda _: None)
  assert result['kills'] == 2 and result['restarts'] == 2
  assert result['record'][0]['mode'] == 'save' and result['record'][0]['in_save'], result['record']
  assert result['mismatched_resumes'] == []
  compared = soak_kill.compare(str(reference_dir), str(soaked_dir))
  assert compared['final_steps'] == [STEPS, STEPS]
  assert compared['final_param_max_abs_diff'] <= 1e-6 and compared['loss_max_abs_diff'] <= 1e-6, compared
  assert compared['logged_steps_equal'] and compared['checkpoints_failing_checksums'] == []

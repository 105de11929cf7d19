"""SIGTERM / SIGINT: the run finishes its step, saves that step (input position and manifest
included), says so and exits with preemption.EXIT_CODE; a second signal exits at once; restarts
continue with the parameters and losses of an uninterrupted run (bench/soak_kill.py, 'sigterm')."""

import signal
import subprocess
import sys
import time

import pytest

from flan_t5x import checkpoint_integrity
from flan_t5x import preemption

import soak_kill  # bench/soak_kill.py (conftest puts bench/ on the path)

STEPS = 60  # enough steps after the third life's first save to outlast the soak's 0-2.5 s wait before its SIGTERM
PERIOD = 10  # periodic saves are rare: what a restart resumes from is the preemption's own save


def _reference(tmp_path):
  reference_dir = tmp_path / 'reference'
  done = subprocess.run(soak_kill.command(reference_dir, STEPS, PERIOD), cwd=soak_kill.ROOT,
                        env=soak_kill.child_env(), capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  return reference_dir


def _until_logged(life, step: int, timeout: float = 600) -> None:
  deadline = time.monotonic() + timeout
  while (life.last_logged_step or 0) < step and life.proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.01)
  assert life.last_logged_step is not None and life.last_logged_step >= step, ''.join(life.lines)[-2000:]


@pytest.mark.slow
def test_sigint_then_sigterm_save_the_step_reached_and_resume_exactly(tmp_path):
  assert soak_kill.PREEMPTED_EXIT_CODE == preemption.EXIT_CODE
  reference_dir, model_dir = _reference(tmp_path), tmp_path / 'preempted'

  # SIGINT (Ctrl-C) once: the step reached is saved, the process says so and exits 75.
  life = soak_kill._Life(model_dir, STEPS, subprocess.DEVNULL, PERIOD)  # pylint: disable=protected-access
  _until_logged(life, 3)
  logged = life.last_logged_step
  life.proc.send_signal(signal.SIGINT)
  assert life.proc.wait(timeout=600) == preemption.EXIT_CODE
  life._reader.join(timeout=30)  # pylint: disable=protected-access
  saved = life.preempted_step
  assert saved is not None and saved >= logged and soak_kill.complete_steps(model_dir) == [saved], saved
  assert checkpoint_integrity.has_manifest(str(model_dir / f'checkpoint_{saved}'))

  # Twice: out at once (the signal's default action), nothing more saved.
  life = soak_kill._Life(model_dir, STEPS, subprocess.DEVNULL, PERIOD)  # pylint: disable=protected-access
  _until_logged(life, saved + 1)
  life.proc.send_signal(signal.SIGINT)
  time.sleep(0.05)
  life.proc.send_signal(signal.SIGINT)
  assert life.proc.wait(timeout=60) == -signal.SIGINT
  assert life.resumed_step == saved and soak_kill.complete_steps(model_dir) == [saved]

  # SIGTERM at a random moment of the next life (the soak's check), then the run finishes.
  result = soak_kill.run_soak(model_dir, STEPS, kills=1, seed=0, modes=('sigterm',), say=lambda _: None,
                              period=PERIOD)
  assert result['failed_preemptions'] == [] and result['mismatched_resumes'] == [], result
  sigterm = result['record'][0]
  assert sigterm['exit_code'] == preemption.EXIT_CODE and sigterm['preempted_step'] > saved, sigterm
  compared = soak_kill.compare(str(reference_dir), str(model_dir))
  assert compared['final_steps'] == [STEPS, STEPS]
  assert compared['final_param_max_abs_diff'] == 0.0 and compared['loss_max_abs_diff'] == 0.0, compared
  assert compared['logged_steps_equal'] and compared['checkpoints_failing_checksums'] == []


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_job_starts_exits_with_the_preemption_code(tmp_path, signum):
  """Before train() installs its watcher (imports, gin, the runtime) there is nothing to save: the job
  exits at once with the preemption code, not the signal's -15, and has written nothing."""
  model_dir = tmp_path / 'run'
  child = subprocess.Popen(soak_kill.command(model_dir, STEPS), cwd=soak_kill.ROOT, env=soak_kill.child_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(1.0)  # the package's first line has run; the job's imports take seconds more
  child.send_signal(signum)
  _, stderr = child.communicate(timeout=120)
  assert child.returncode == preemption.EXIT_CODE, stderr[-2000:]
  assert (f'{signal.Signals(signum).name} received outside the training loop (starting or finishing): nothing '
          f'to save; exiting with code {preemption.EXIT_CODE}') in stderr
  assert not list(model_dir.glob('checkpoint_*'))


@pytest.mark.slow
def test_sigterm_during_an_inference_evaluation_saves_within_one_decode_batch(tmp_path):
  """The evaluation in training (gin/runs/inference_eval.gin, one example per decode batch) stops
  before its next batch: the step is saved and the job exits with the preemption code, without
  decoding the rest (docs/reliability.md quotes the time from SIGTERM to exit)."""
  model_dir = tmp_path / 'run'
  command = [sys.executable, '-m', 'flan_t5x.train', '--gin_file=gin/demo.gin', '--gin_file=gin/runs/inference_eval.gin',
             f"--gin.MODEL_DIR='{model_dir}'", '--gin.TRAIN_STEPS=4', '--gin.BATCH_SIZE=4', '--gin.EVAL_PERIOD=2',
             '--gin.EVAL_STEPS=1', '--gin.INFERENCE_EVAL_MAX_EXAMPLES=64',
             '--gin.evaluation.InferenceEvalConfig.batch_size=1', '--gin.train_script.train.use_progress_bar=False']
  child = subprocess.Popen(command, cwd=soak_kill.ROOT, env=soak_kill.child_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in child.stdout:  # the first decode batch has compiled and run: the evaluation is under way
    lines.append(line)
    if 'decode demo_' in line or ': decoding 64 examples' in line:
      break
  time.sleep(2.0)
  sent = time.monotonic()
  child.send_signal(signal.SIGTERM)
  rest, _ = child.communicate(timeout=300)
  seconds = time.monotonic() - sent
  output = ''.join(lines) + rest
  assert child.returncode == preemption.EXIT_CODE, output[-3000:]
  assert 'SIGTERM received: saved checkpoint_2' in output, output[-3000:]
  assert checkpoint_integrity.has_manifest(str(model_dir / 'checkpoint_2'))
  assert '[flan_t5x] demo_support_zs: rouge1' not in rest.split('SIGTERM received')[-1]  # not decoded to the end
  print(f'SIGTERM during the inference evaluation -> exit {child.returncode} in {seconds:.1f} s')
  assert seconds < 120, seconds

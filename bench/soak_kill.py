r"""Kill anywhere: SIGKILL or SIGTERM a training process at random moments, restart it each time, compare.

  python bench/soak_kill.py [--kills 20] [--steps 400] [--seed 0] [--period 1] [--faults all]

One uninterrupted run (the peer) and one run that is SIGKILLed `--kills` times and restarted
after each kill, both `python -m flan_t5x.train` on gin/demo.gin made small (batch 4, lengths
64/16, dropout 0.1, a checkpoint every step, the last 3 kept, so a save or a deletion is in
flight most of the time; `--period` saves less often, so that SIGTERM's own save matters). Each
kill is one of:
  startup  at a random moment before training (imports, lock, restore, compile: uniform up to
           the time the previous process took to start training);
  save     as soon as this process's first orbax temporary directory appears (inside a save);
  random   at a random moment of training (uniform in 0..2.5 s after its first save began);
  sigterm  SIGTERM (preemption) at such a random moment: the process must finish its step, save
           it, print `saved checkpoint_<n>` and exit with preemption.EXIT_CODE (75), and that
           checkpoint must be the newest complete one, with its manifest, at a step no earlier
           than the last step the process had logged.
`--faults` spreads faults over the kills, each between two lives: `optimizer` (a restart with
AdamW and fallback_to_previous: one `error:` line, MODEL_DIR unchanged), `fallback` (a flipped byte in
the newest checkpoint, fallback_to_previous on: only it moves to damaged/, the run resumes from the
one before), `manifest` (a copy without the newest manifest and with a flipped byte is never
certified; the run itself without that manifest resumes from it and says it is unverifiable),
`all_damaged` (a copy with every checkpoint damaged: each moved, an error, no fresh start) and
`sigterm_eval` (SIGTERM while the in-training evaluation decodes: the step saved, exit 75; the time
from signal to exit recorded). The runs that go on end with a SIGTERM, checked as above.
After each kill the newest complete checkpoint is noted; the restart must print that it resumed
from exactly that step. At the end both runs' final parameters and per-step losses are compared,
and every checkpoint left must pass its checksum manifest. Prints the result and the soak's wall
time as a ratio of the peer's; writes JSON to bench/results/soak_kill.json.

`run_soak` is also the engine of tests/reliability/test_kill_anywhere.py (a few kills).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import bench_results  # bench/ is on sys.path (as a script, and in the tests' conftest)
import hardware

ROOT = pathlib.Path(__file__).resolve().parents[1]
TMP_MARK = '.orbax-checkpoint-tmp'
_STARTED = re.compile(r'MODEL_DIR=.*: (?:resumed from .* at step (\d+)|initialized from scratch);')
_LOGGED = re.compile(r'\[flan_t5x\] step (\d+) loss/token')
_PREEMPTED = re.compile(r'received: saved checkpoint_(\d+) in ')
PREEMPTED_EXIT_CODE = 75  # flan_t5x.preemption.EXIT_CODE (not imported: the bench runs without jax loaded)


def command(model_dir: str, steps: int, period: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
  bindings = {'MODEL_DIR': repr(str(model_dir)), 'TRAIN_STEPS': steps, 'BATCH_SIZE': 4,
              'TASK_FEATURE_LENGTHS': "{'inputs': 64, 'targets': 16}", 'EVAL_PERIOD': None, 'DROPOUT_RATE': 0.1,
              'RANDOM_SEED': 0, 'utils.SaveCheckpointConfig.period': period,  # 1: a save every step
              'utils.SaveCheckpointConfig.keep': 3, 'train_script.train.use_progress_bar': False,
              'train_script.train.log_period': 1}
  return [sys.executable, '-m', 'flan_t5x.train', '--gin_file=gin/demo.gin'] + [
      f'--gin.{k}={v}' for k, v in bindings.items()] + list(extra)


def child_env() -> dict:
  return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
              XLA_FLAGS='--xla_backend_optimization_level=0')


def complete_steps(model_dir) -> list[int]:
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name.split('_', 1)[1]) for name in os.listdir(model_dir)
                if name.startswith('checkpoint_') and name.split('_', 1)[1].isdigit())


def save_in_flight(model_dir, since: float) -> bool:
  """An orbax temporary directory created or changed since `since` (time.time()): a save running.

  A killed save leaves its temporary directory until the next run's checkpoint manager removes
  it, so an old one does not count.
  """
  if not os.path.isdir(model_dir):
    return False
  for name in os.listdir(model_dir):
    if TMP_MARK in name:
      try:
        stat = os.stat(os.path.join(model_dir, name))
      except FileNotFoundError:
        continue  # finished (renamed) or cleaned up meanwhile
      if max(stat.st_mtime, stat.st_ctime) >= since:
        return True
  return False


class _Life:
  """One training process; its stdout is read by a thread so the pipe never fills."""

  def __init__(self, model_dir, steps, log, period=1, extra=()):
    self.proc = subprocess.Popen(command(model_dir, steps, period, extra), cwd=ROOT, env=child_env(),
                                 stdout=subprocess.PIPE, stderr=log, text=True)
    self.started_at = time.monotonic()
    self.started_wall = time.time()
    self.resumed_step: int | None = None  # -1: initialized from scratch
    self.training = threading.Event()
    self.lines: list[str] = []
    self.last_logged_step: int | None = None
    self.preempted_step: int | None = None  # from its `saved checkpoint_<n>` line
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def wait_for(self, pattern: str, timeout: float) -> bool:
    """True once a line matching `pattern` was printed; False if the process ended or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if any(re.search(pattern, line) for line in list(self.lines)):
        return True
      if self.proc.poll() is not None and not self._reader.is_alive():
        return False
      time.sleep(0.05)
    return False

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)
      if (logged := _LOGGED.search(line)):
        self.last_logged_step = int(logged.group(1))
      if (preempted := _PREEMPTED.search(line)):
        self.preempted_step = int(preempted.group(1))
      match = _STARTED.search(line)
      if match:
        self.resumed_step = int(match.group(1)) if match.group(1) else -1
        self.training.set()


@dataclasses.dataclass
class Kill:
  mode: str
  seconds_after_start: float
  in_save: bool  # an orbax temporary directory existed at the kill
  newest_complete: int | None
  resumed_step_of_that_life: int | None
  exit_code: int | None = None
  logged_step_at_signal: int | None = None  # sigterm: the last step the process had logged
  preempted_step: int | None = None  # sigterm: the step its `saved checkpoint_<n>` line names


def _first_save(life: _Life, model_dir, timeout: float) -> bool:
  """Waits until this life is saving (compiled and stepping); False if it ended or timed out.

  Waits for the start line first: before it, the checkpoint manager may be deleting an older
  killed save's temporary directory, which also changes that directory's times.
  """
  deadline = time.monotonic() + timeout
  if not life.training.wait(timeout=timeout):
    return False
  before = complete_steps(model_dir)
  while time.monotonic() < deadline and life.proc.poll() is None:
    if save_in_flight(model_dir, life.started_wall) or complete_steps(model_dir) != before:
      return True
    time.sleep(0.002)
  return False


def _kill_moment(life: _Life, mode: str, model_dir, rng: random.Random, startup_s: float) -> str:
  """Waits for the moment of `mode`; returns the mode actually used."""
  if mode == 'startup':  # imports, lock, restore, input position, first compile
    time.sleep(rng.uniform(0.2, startup_s))
    return mode
  if not _first_save(life, model_dir, timeout=600):
    return 'startup'
  if mode == 'save':
    return mode  # an orbax temporary directory exists now, or just did
  time.sleep(rng.uniform(0.0, 2.5))
  return mode


def _integrity():
  """flan_t5x.checkpoint_integrity, imported from this checkout (the bench runs without it on the path)."""
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  from flan_t5x import checkpoint_integrity  # pylint: disable=g-import-not-at-top
  return checkpoint_integrity


def _check_preemption(life: _Life, kill: 'Kill', model_dir) -> str | None:
  """What is wrong with how a SIGTERMed life ended (None: saved the step it reached, exited 75)."""
  checkpoint_integrity = _integrity()
  life._reader.join(timeout=30)  # pylint: disable=protected-access  (its last lines)
  kill.preempted_step = life.preempted_step
  if kill.exit_code != PREEMPTED_EXIT_CODE or life.preempted_step is None:
    return f'exit {kill.exit_code}, saved-step line {life.preempted_step}: {"".join(life.lines)[-600:]}'
  if kill.newest_complete != life.preempted_step:
    return f'said it saved step {life.preempted_step}, newest complete is {kill.newest_complete}'
  if kill.logged_step_at_signal is not None and life.preempted_step < kill.logged_step_at_signal:
    return f'saved step {life.preempted_step}, but had logged step {kill.logged_step_at_signal} before the signal'
  step_dir = os.path.join(model_dir, f'checkpoint_{life.preempted_step}')
  if not checkpoint_integrity.has_manifest(step_dir) or checkpoint_integrity.problems(step_dir):
    return f'{step_dir} has no manifest or fails it'
  return None


# ------------------------------------------------------------------ faults between kills
# Each fault acts on the soaked MODEL_DIR between two lives (or on a copy of it, where the fault would
# destroy the run) and checks the promise of docs/reliability.md: nothing good is moved or lost, nothing
# bad is certified, a SIGTERM during the in-training evaluation saves and exits 75 promptly.
FAULTS = ('optimizer', 'fallback', 'manifest', 'all_damaged', 'sigterm_eval')
FALLBACK = ('--gin.utils.RestoreCheckpointConfig.fallback_to_previous=True',)
OTHER_OPTIMIZER = ('--gin_bindings=from __gin__ import dynamic_registration',  # the bindings' own imports
                   '--gin_bindings=from flan_t5x import optimizers', '--gin.OPTIMIZER=@optimizers.AdamW()')
IN_TRAINING_EVAL = ('--gin_file=gin/runs/inference_eval.gin', '--gin.EVAL_STEPS=1',
                    '--gin.INFERENCE_EVAL_MAX_EXAMPLES=64', '--gin.evaluation.InferenceEvalConfig.batch_size=1')
_DECODING = r'decode demo_|: decoding 64 examples'
_LOCK_PREFIX = '.lock-'


def _listing(model_dir) -> dict[str, tuple[int, int]]:
  """Every file under MODEL_DIR -> (size, mtime_ns): what a fault must not touch. Left out: the run lock
  and a killed save's orbax temporary directory (every start removes it: it never held a checkpoint)."""
  out = {}
  for root, _, names in os.walk(model_dir):
    if TMP_MARK in root:
      continue
    for name in names:
      if not name.startswith(_LOCK_PREFIX):
        path = os.path.join(root, name)
        stat = os.stat(path)
        out[os.path.relpath(path, model_dir)] = (stat.st_size, stat.st_mtime_ns)
  return out


def largest_file(directory) -> str:
  """The largest file under `directory` (a checkpoint's tensor data: where a flipped byte lands)."""
  paths = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
  return max(paths, key=os.path.getsize)


def flip_byte(path) -> None:
  """Inverts the byte in the middle of `path`: damage only a checksum can see."""
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


def _copy_run(model_dir, tmp) -> str:
  """A copy of the run (without its lock) to damage where the fault would destroy the run itself."""
  copy = os.path.join(tmp, 'copy')
  shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns(_LOCK_PREFIX + '*'))
  return copy


def _run_once(model_dir, steps, period, extra, timeout=900) -> subprocess.CompletedProcess:
  return subprocess.run(command(model_dir, steps, period, extra), cwd=ROOT, env=child_env(), capture_output=True,
                        text=True, timeout=timeout)


def _last_line(text: str) -> str:
  lines = text.strip().splitlines()
  return lines[-1] if lines else ''


def _fault_optimizer(model_dir, steps, period, log) -> dict:
  """Another optimizer, with fallback_to_previous on: a configuration error; nothing moved or written."""
  del log
  before = _listing(model_dir)
  done = _run_once(model_dir, steps, period, FALLBACK + OTHER_OPTIMIZER)  # (the latter's import block last)
  last = _last_line(done.stderr)
  problems = []
  if (done.returncode in (0, PREEMPTED_EXIT_CODE) or not last.startswith('error:')
      or 'another optimizer' not in last or 'nothing was moved' not in last):
    problems.append(f'exit {done.returncode}, last line {last[:300]!r}')
  after = _listing(model_dir)
  if after != before:
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    problems.append(f'MODEL_DIR changed: {changed[:5]}')
  return {'checkpoints': complete_steps(model_dir), 'error': last[:300], 'problems': problems}


def _moved(model_dir) -> list[str]:
  """The names in MODEL_DIR/damaged/: what fallback_to_previous moved (`checkpoint_10`, or
  `checkpoint_10.2` when a checkpoint of that step was moved before)."""
  damaged_dir = os.path.join(model_dir, 'damaged')
  return sorted(os.listdir(damaged_dir)) if os.path.isdir(damaged_dir) else []


def _steps(names) -> list[int]:
  return sorted(int(re.match(r'checkpoint_(\d+)', n).group(1)) for n in names)


def _fault_all_damaged(model_dir, steps, period, log) -> dict:
  """Every checkpoint of a copy damaged, fallback on: it moves each (proved damaged) and stops, never
  starting from scratch."""
  del log
  with tempfile.TemporaryDirectory() as tmp:
    copy = _copy_run(model_dir, tmp)
    damaged = complete_steps(copy)
    for step in damaged:
      flip_byte(largest_file(os.path.join(copy, f'checkpoint_{step}', 'state')))
    moved_before = _moved(copy)  # an earlier 'fallback' fault's
    done = _run_once(copy, steps, period, FALLBACK)
    moved = _steps(set(_moved(copy)) - set(moved_before))
    problems = []
    if (done.returncode in (0, PREEMPTED_EXIT_CODE) or 'initialized from scratch' in done.stdout
        or not _last_line(done.stderr).startswith('error: NoIntactCheckpointError')):
      problems.append(f'exit {done.returncode}: {(done.stdout + done.stderr)[-300:]!r}')
    if moved != damaged or complete_steps(copy):
      problems.append(f'damaged {damaged}, moved {moved}, left {complete_steps(copy)}')
    return {'damaged': damaged, 'moved': moved, 'error': _last_line(done.stderr)[:300], 'problems': problems}


def _fault_manifest(model_dir, steps, period, log) -> dict:
  """A copy without its newest manifest and with a flipped tensor byte: never certified (its new manifest
  says unverified, or the restore calls it damaged). Then the real run without that manifest: resumes
  from it, says it is unverifiable (the soak goes on from there)."""
  integrity = _integrity()
  newest = complete_steps(model_dir)[-1]
  problems = []
  with tempfile.TemporaryDirectory() as tmp:
    copy = _copy_run(model_dir, tmp)
    step_dir = os.path.join(copy, f'checkpoint_{newest}')
    os.remove(os.path.join(step_dir, integrity.MANIFEST))
    flip_byte(largest_file(os.path.join(step_dir, 'state')))
    done = _run_once(copy, newest + 1, period, ())
    output = done.stdout + done.stderr
    certified = 'matched their checksums' in output or (
        integrity.has_manifest(step_dir) and integrity.verified_at_save(step_dir))
    said = 'unverifiable' in output or 'damaged' in output.lower()
    if certified or not said:
      problems.append(f'flipped copy: exit {done.returncode}, certified {certified}: {output[-300:]!r}')
    flipped = {'exit': done.returncode, 'certified': certified}
  os.remove(os.path.join(model_dir, f'checkpoint_{newest}', integrity.MANIFEST))
  life = _Life(model_dir, steps, log, period)
  return {'newest': newest, 'flipped_copy': flipped, 'problems': problems, 'life': life,
          'expect_resume': newest, 'expect_line': 'had no checksum manifest: unverifiable'}


def _fault_fallback(model_dir, steps, period, log) -> dict:
  """The newest checkpoint damaged (a flipped byte its manifest catches), fallback on: only it is moved to
  damaged/, and the run resumes from the previous one (the soak goes on from there)."""
  steps_before = complete_steps(model_dir)
  newest = steps_before[-1]
  moved_before = _moved(model_dir)
  flip_byte(largest_file(os.path.join(model_dir, f'checkpoint_{newest}', 'state')))
  life = _Life(model_dir, steps, log, period, FALLBACK)
  return {'newest': newest, 'problems': [], 'life': life, 'moved_before': moved_before,
          'expect_resume': steps_before[-2] if len(steps_before) > 1 else -1, 'expect_moved': [newest]}


def _fault_sigterm_eval(model_dir, steps, period, log) -> dict:
  """SIGTERM while the in-training inference evaluation decodes: the step is saved, exit 75, promptly."""
  life = _Life(model_dir, steps, log, period, IN_TRAINING_EVAL + (f'--gin.EVAL_PERIOD={period}',))
  return {'problems': [], 'life': life, 'expect_resume': (complete_steps(model_dir) or [-1])[-1],
          'signal_at': _DECODING}


def run_fault(kind: str, model_dir, steps: int, period: int, log) -> dict:
  """One fault between lives; a fault that continues the run ends its life with a SIGTERM (exit 75)."""
  result = globals()[f'_fault_{kind}'](model_dir, steps, period, log)
  life = result.pop('life', None)
  if life is not None:
    problems = result['problems']
    if not life.training.wait(timeout=900):
      problems.append(f'no start line: {"".join(life.lines)[-600:]}')
    elif life.resumed_step != result['expect_resume']:
      problems.append(f'resumed at {life.resumed_step}, expected {result["expect_resume"]}')
    if 'expect_line' in result and not any(result['expect_line'] in line for line in life.lines):
      problems.append(f'no line saying {result["expect_line"]!r}')
    if 'expect_moved' in result:
      moved = _steps(set(_moved(model_dir)) - set(result.pop('moved_before')))
      result['moved'] = moved
      if moved != result['expect_moved']:
        problems.append(f'moved {moved}, expected {result["expect_moved"]}')
    waited = life.wait_for(result.get('signal_at', _LOGGED.pattern), timeout=900)
    if not waited:
      problems.append(f'never reached {result.get("signal_at", "a logged step")!r}: {"".join(life.lines)[-600:]}')
    logged = life.last_logged_step
    sent = time.monotonic()
    life.proc.send_signal(signal.SIGTERM)
    exit_code = life.proc.wait(timeout=900)
    result['sigterm_to_exit_s'] = round(time.monotonic() - sent, 1)
    kill = Kill('sigterm', 0.0, False, (complete_steps(model_dir) or [None])[-1], life.resumed_step, exit_code,
                logged)
    if (problem := _check_preemption(life, kill, model_dir)):
      problems.append(problem)
    result['saved_step'] = kill.preempted_step
  result['fault'] = kind
  return result


def run_soak(model_dir, steps: int, kills: int, seed: int,
             modes=('startup', 'save', 'random', 'sigterm', 'random', 'sigterm'),
             log=subprocess.DEVNULL, say=print, period: int = 1, faults=()) -> dict:
  """Kills a run `kills` times, restarting it each time, then lets it finish; returns the record.

  `faults` (names from FAULTS) are spread over the kills: each runs between two lives, once the
  run has the checkpoints it needs (two for 'fallback', one for the others).
  """
  rng = random.Random(seed)
  record: list[Kill] = []
  mismatched_resumes: list[str] = []
  failed_preemptions: list[str] = []
  fault_results: list[dict] = []
  pending = list(faults)
  due_after = [round((i + 1) * kills / (len(faults) + 1)) for i in range(len(faults))]
  lives, startup_s = 0, 10.0
  while True:
    while pending and len(record) >= due_after[len(fault_results)] and len(record) < kills and len(
        complete_steps(model_dir)) >= (2 if pending[0] == 'fallback' else 1):
      fault = run_fault(pending.pop(0), model_dir, steps, period, log)
      fault_results.append(fault)
      say(f'fault {fault["fault"]}: ' + ('ok' if not fault['problems'] else f'FAILED {fault["problems"]}')
          + ''.join(f', {k} {fault[k]}' for k in ('moved', 'saved_step', 'sigterm_to_exit_s', 'error')
                    if k in fault))
    expected = (complete_steps(model_dir) or [-1])[-1]
    life = _Life(model_dir, steps, log, period)
    lives += 1
    if len(record) >= kills:
      if life.proc.wait(timeout=1800) != 0:
        raise RuntimeError(f'the final restart failed (exit {life.proc.returncode}): {"".join(life.lines)[-2000:]}')
      life.training.wait(timeout=5)
      if life.resumed_step != expected:
        mismatched_resumes.append(f'final life resumed at {life.resumed_step}, newest complete was {expected}')
      break
    mode = _kill_moment(life, modes[len(record) % len(modes)], model_dir, rng, startup_s)
    if mode != 'startup':
      startup_s = time.monotonic() - life.started_at  # how long starting took, for the next startup kill
    if life.proc.poll() is not None:
      raise RuntimeError(f'the run ended (exit {life.proc.returncode}) before kill {len(record) + 1}; '
                         f'use more --steps. {"".join(life.lines)[-1500:]}')
    in_save = save_in_flight(model_dir, life.started_wall)
    logged_at_signal = life.last_logged_step
    life.proc.send_signal(signal.SIGTERM if mode == 'sigterm' else signal.SIGKILL)
    exit_code = life.proc.wait(timeout=900)
    if life.training.is_set() and life.resumed_step != expected:
      mismatched_resumes.append(f'life {lives} resumed at {life.resumed_step}, newest complete was {expected}')
    kill = Kill(mode, round(time.monotonic() - life.started_at, 2), in_save,
                (complete_steps(model_dir) or [None])[-1], life.resumed_step, exit_code, logged_at_signal)
    if mode == 'sigterm' and (problem := _check_preemption(life, kill, model_dir)):
      failed_preemptions.append(f'kill {len(record) + 1}: {problem}')
    record.append(kill)
    say(f'kill {len(record)}/{kills}: {kill.mode:7s} after {kill.seconds_after_start:5.1f} s, '
        f'in a save: {kill.in_save}, newest complete checkpoint: {kill.newest_complete}'
        + (f', exit {kill.exit_code}, saved step {kill.preempted_step} (logged {kill.logged_step_at_signal})'
           if kill.mode == 'sigterm' else ''))
  return {'kills': len(record), 'restarts': lives - 1, 'failed_preemptions': failed_preemptions,
          'faults': fault_results, 'faults_not_run': pending,
          'fault_problems': [f'{f["fault"]}: {p}' for f in fault_results for p in f['problems']],
          'sigterms_saved_at_reached_step': sum(k.mode == 'sigterm' and k.preempted_step is not None
                                               and k.preempted_step == k.newest_complete for k in record),
          'resumes_checked': sum(k.resumed_step_of_that_life is not None for k in record) + 1,
          'mismatched_resumes': mismatched_resumes,
          'kills_by_mode': {m: sum(k.mode == m for k in record) for m in sorted({k.mode for k in record})},
          'kills_in_save': sum(k.in_save for k in record), 'record': [dataclasses.asdict(k) for k in record]}


def compare(reference_dir, soaked_dir) -> dict:
  """Final parameters and per-step losses of the two runs; checksums of what the soak left."""
  sys.path.insert(0, str(ROOT))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flan_t5x import checkpoint_integrity, checkpoints, summaries  # pylint: disable=g-import-not-at-top
  reference, ref_step = checkpoints.read_params(str(reference_dir))
  soaked, soak_step = checkpoints.read_params(str(soaked_dir))
  param_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(soaked)))
  ref_losses = summaries.read_scalars(os.path.join(reference_dir, 'train'), 'loss')
  soak_losses = summaries.read_scalars(os.path.join(soaked_dir, 'train'), 'loss')
  damaged = [s for s in complete_steps(soaked_dir)
             if checkpoint_integrity.problems(os.path.join(soaked_dir, f'checkpoint_{s}'))]
  return {'final_steps': [ref_step, soak_step], 'final_param_max_abs_diff': param_diff,
          'logged_steps_equal': sorted(ref_losses) == sorted(soak_losses),
          'loss_max_abs_diff': max(abs(ref_losses[s] - soak_losses.get(s, float('inf'))) for s in ref_losses),
          'checkpoints_failing_checksums': damaged}


def _timed_reference(model_dir, steps, log, period=1) -> float:
  tick = time.monotonic()
  done = subprocess.run(command(model_dir, steps, period), cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=log,
                        timeout=1800)
  if done.returncode:
    raise RuntimeError(f'the uninterrupted reference run failed (exit {done.returncode})')
  return time.monotonic() - tick


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kills', type=int, default=20)
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--period', type=int, default=1, help='checkpoint period (1: a save every step)')
  parser.add_argument('--faults', default='', help=f'comma-separated faults between kills, from {FAULTS} or "all"')
  parser.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'soak_kill.json'))
  args = parser.parse_args()
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, 'children.log'), 'w') as log:
    reference_dir, soaked_dir = os.path.join(tmp, 'reference'), os.path.join(tmp, 'soaked')
    reference_s = _timed_reference(reference_dir, args.steps, log, args.period)
    print(f'peer: uninterrupted run of {args.steps} steps in {reference_s:.1f} s', flush=True)
    tick = time.monotonic()
    faults = FAULTS if args.faults == 'all' else tuple(f for f in args.faults.split(',') if f)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
      parser.error(f'--faults: unknown {unknown}; expected some of {FAULTS} or "all"')
    result = run_soak(soaked_dir, args.steps, args.kills, args.seed, log=log,
                      say=lambda line: print(line, flush=True), period=args.period, faults=faults)
    soak_s = time.monotonic() - tick
    result.update(compare(reference_dir, soaked_dir))
  result.update(steps=args.steps, seed=args.seed, period=args.period, reference_seconds=round(reference_s, 1),
                soak_seconds=round(soak_s, 1), soak_to_reference_time_ratio=round(soak_s / reference_s, 2))
  bench_results.write_json('soak_kill', result, args.out)
  print(json.dumps({k: v for k, v in result.items() if k != 'record'}, indent=1))
  print(f'{result["kills"]} kills ({result["kills_in_save"]} inside a save; {result["kills_by_mode"].get("sigterm", 0)} '
        f'SIGTERMs, {result["sigterms_saved_at_reached_step"]} saved at the step reached, failures: '
        f'{result["failed_preemptions"]}), {result["restarts"]} restarts, '
        f'resumes from the newest complete checkpoint: {not result["mismatched_resumes"]}; final parameter '
        f'max |diff| {result["final_param_max_abs_diff"]:.3g}, loss max |diff| {result["loss_max_abs_diff"]:.3g}; '
        f'soak/peer wall time {result["soak_to_reference_time_ratio"]}x; faults run: '
        f'{[f["fault"] for f in result["faults"]]}, not run: {result["faults_not_run"]}, problems: '
        f'{result["fault_problems"]}. Wrote {args.out}')


if __name__ == '__main__':
  main()

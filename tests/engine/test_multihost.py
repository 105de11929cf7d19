"""Two processes on localhost (jax.distributed, gloo collectives, 2 CPU devices each).

- Data-parallel training equals one process fed the same global batches.
- SIGKILL of one worker: the other exits with an error in bounded time; restarting both resumes
  from the last checkpoint with the losses of an uninterrupted run.
- SIGTERM to one worker: both save the same step and exit 75; restarting both resumes it.
- eval and infer over 13 examples (divisible by neither the hosts nor the batch): the metrics and
  predictions of one process, every input decoded exactly once.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import seqio

from flan_t5x import data
from flan_t5x import gin_utils

import helpers
import multihost_worker
import tiny_task

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = gin_utils.REPO_ROOT
STEPS = 16
HOSTS = 2


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def _env(devices: int = 2) -> dict:
  return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE, os.environ.get('PYTHONPATH', '')]),
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0')


def _start_workers(model_dir, period: int) -> list[subprocess.Popen]:
  port = _free_port()
  return [subprocess.Popen([sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(model_dir), str(STEPS),
                            str(period), str(index), str(HOSTS), str(port)],
                           cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for index in range(HOSTS)]


def _finish(processes, timeout=600) -> list[str]:
  outputs = []
  for proc in processes:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    outputs.append(out)
  return outputs


def _losses(output: str) -> dict[int, float]:
  last = [line for line in output.splitlines() if line.startswith('{')][-1]
  return {int(k): v for k, v in json.loads(last)['losses'].items()}


def _one_process_losses(steps: int) -> list[float]:
  """One process, one device, each step fed the concatenation of both hosts' batches."""
  model = helpers.tiny_model(dropout_rate=multihost_worker.DROPOUT)
  trainer = helpers.make_trainer(model=model, batch_size=multihost_worker.GLOBAL_BATCH)
  cfg = helpers.dataset_cfg(multihost_worker.GLOBAL_BATCH)
  hosts = [data.InputIterator(data.get_dataset(cfg, model.feature_converter(True), seed=0, num_epochs=None,
                                               shard=seqio.ShardInfo(index, HOSTS)))
           for index in range(HOSTS)]
  state, losses = trainer.init_state(), []
  for _ in range(steps):
    parts = [next(host) for host in hosts]
    batch = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics['loss']))
  return losses


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('two_hosts')
  outputs = _finish(_start_workers(model_dir, period=4))
  return model_dir, [_losses(out) for out in outputs]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(two_process_run):
  _, (losses_0, losses_1) = two_process_run
  assert sorted(losses_0) == list(range(1, STEPS + 1)) and losses_0 == losses_1
  expected = _one_process_losses(STEPS)
  np.testing.assert_allclose([losses_0[s] for s in range(1, STEPS + 1)], expected, rtol=2e-5, atol=1e-6)


@pytest.mark.slow
def test_killed_worker_stops_its_peer_and_both_resume_exactly(two_process_run, tmp_path):
  _, (reference, _) = two_process_run
  model_dir = tmp_path / 'killed'
  processes = _start_workers(model_dir, period=1)
  deadline = time.time() + 300
  while not (model_dir / 'checkpoint_3').is_dir() and time.time() < deadline:
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  _, err = processes[0].communicate(timeout=180)
  processes[1].communicate()
  # The heartbeat timeout is 10 s: the survivor must not wait for the dead peer forever.
  assert processes[0].returncode != 0, 'the surviving worker finished although its peer was killed'
  assert time.time() - killed_at < 120
  assert 'task' in err.lower() and ('died' in err or 'heartbeat' in err or 'unavailable' in err.lower()), err[-3000:]
  saved = [int(p.rsplit('_', 1)[1]) for p in glob.glob(str(model_dir / 'checkpoint_*'))
           if p.rsplit('_', 1)[1].isdigit()]
  assert 3 <= max(saved) < STEPS, 'the run finished before it could be killed'

  outputs = _finish(_start_workers(model_dir, period=1))
  resumed = _losses(outputs[0])
  assert min(resumed) == max(saved) + 1  # continued after the newest complete checkpoint
  after_kill = helpers.event_losses(model_dir)
  assert sorted(after_kill) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([after_kill[s] for s in reference], [reference[s] for s in reference],
                             rtol=0, atol=1e-6)


@pytest.mark.slow
def test_sigterm_to_one_host_makes_both_save_the_same_step_and_the_restart_resumes_it(two_process_run, tmp_path):
  """JAX's preemption notifier on host 1 tells host 0; both stop at the agreed step and save it."""
  _, (reference, _) = two_process_run
  model_dir = tmp_path / 'preempted'
  processes = _start_workers(model_dir, period=1000)  # no periodic save: only the preemption's
  deadline = time.time() + 300
  while not list((model_dir / 'train').glob('events.out.tfevents.*')) and time.time() < deadline:
    time.sleep(0.05)  # training has started (the first step is being compiled or run)
  processes[1].send_signal(signal.SIGTERM)
  results = []
  for proc in processes:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, (proc.returncode, err[-3000:])  # preemption.EXIT_CODE
    results.append(json.loads([line for line in out.splitlines() if line.startswith('{')][-1]))
  saved = results[0]['preempted_at']
  assert results[1]['preempted_at'] == saved and 1 <= saved < STEPS, results
  assert 'SIGTERM received: saved checkpoint_' in results[0]['line']
  assert [p.name for p in model_dir.glob('checkpoint_*')] == [f'checkpoint_{saved}']
  assert (model_dir / f'checkpoint_{saved}' / 'flan_t5x_manifest.json').is_file()

  outputs = _finish(_start_workers(model_dir, period=1000))
  assert min(_losses(outputs[0])) == saved + 1  # resumed at the saved step
  after = helpers.event_losses(model_dir)
  assert sorted(after) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([after[s] for s in reference], [reference[s] for s in reference], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ eval and infer



def _run_job(module: str, run_gin: str, bindings: dict, hosts: int, tmp_path) -> None:
  model_gin = tmp_path / 'tiny_model.gin'
  model_gin.write_text(helpers.TINY_MODEL_GIN)
  args = [sys.executable, '-m', f'flan_t5x.{module}', f'--gin_file={model_gin}',
          f'--gin_file={run_gin}'] + [f'--gin.{k}={v}' for k, v in bindings.items()]
  if hosts == 1:
    done = subprocess.run(args, cwd=REPO, env=_env(devices=2), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return
  port = _free_port()
  _finish([subprocess.Popen(args + ['--multiprocess_gpu', f'--coordinator_address=localhost:{port}',
                                    f'--process_count={hosts}', f'--process_index={index}'],
                            cwd=REPO, env=_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for index in range(hosts)])


@pytest.mark.slow
def test_two_process_eval_equals_one_process(two_process_run, tmp_path):
  model_dir, _ = two_process_run
  results = {}
  for hosts in (1, 2):
    out = tmp_path / f'eval_{hosts}'
    _run_job('eval', 'gin/runs/eval.gin', {
        'CHECKPOINT_PATH': f"'{model_dir}'", 'EVAL_OUTPUT_DIR': f"'{out}'",
        'MIXTURE_OR_TASK_NAME': f"'{tiny_task.UNEVEN_TASK_NAME}'", 'MIXTURE_OR_TASK_MODULE': "'tiny_task'",
        'BATCH_SIZE': '4', 'TASK_FEATURE_LENGTHS': "{'inputs': 32, 'targets': 16}"}, hosts, tmp_path)
    task_result = json.loads((out / 'results.json').read_text())['tasks'][tiny_task.UNEVEN_TASK_NAME]
    predictions = (out / f'{tiny_task.UNEVEN_TASK_NAME}-predictions.jsonl').read_text().splitlines()
    results[hosts] = (task_result['num_examples'], task_result['metrics'], predictions)
  assert results[1][0] == 13 and len(results[1][2]) == 13
  assert results[2] == results[1]


@pytest.mark.slow
def test_two_process_infer_decodes_every_input_once(two_process_run, tmp_path):
  model_dir, _ = two_process_run
  inputs = tmp_path / 'inputs.jsonl'
  inputs.write_text(''.join(json.dumps({'inputs': f'copy: alpha beta {i}'}) + '\n' for i in range(13)))
  predictions = {}
  for hosts in (1, 2):
    out = tmp_path / f'infer_{hosts}'
    _run_job('infer', 'gin/runs/infer.gin', {
        'CHECKPOINT_PATH': f"'{model_dir}'", 'INFER_OUTPUT_DIR': f"'{out}'", 'INFER_INPUT_PATH': f"'{inputs}'",
        'CHUNK_SIZE': '4', 'BATCH_SIZE': '2', 'MAX_DECODE_LENGTH': '8'}, hosts, tmp_path)
    files = sorted(glob.glob(str(out / 'predictions-*.jsonl')))
    assert len(files) == hosts
    records = [json.loads(line) for path in files for line in open(path)]
    indices = [r['index'] for r in records]
    assert sorted(indices) == list(range(13)), indices  # every input exactly once, no padding rows
    predictions[hosts] = {r['index']: r['prediction'] for r in records}
  assert predictions[2] == predictions[1]


@pytest.mark.slow
def test_two_process_infer_refuses_together_when_one_host_inputs_changed(two_process_run, tmp_path):
  """Line 6 (host 1's) edited: host 0's manifest still matches, yet both refuse (no host waits on the other)."""
  model_dir, _ = two_process_run
  inputs, out = tmp_path / 'inputs.jsonl', tmp_path / 'infer'
  write = lambda edited: inputs.write_text(''.join(
      json.dumps({'inputs': f'copy: alpha beta {i}' + (' edited' if i == edited else '')}) + '\n'
      for i in range(9)))
  bindings = {'CHECKPOINT_PATH': f"'{model_dir}'", 'INFER_OUTPUT_DIR': f"'{out}'",
              'INFER_INPUT_PATH': f"'{inputs}'", 'CHUNK_SIZE': '2', 'BATCH_SIZE': '2', 'MAX_DECODE_LENGTH': '4'}
  write(None)
  _run_job('infer', 'gin/runs/infer.gin', bindings, HOSTS, tmp_path)
  before = {p: open(p, 'rb').read() for p in glob.glob(str(out / '**' / '*'), recursive=True) if os.path.isfile(p)}
  write(5)
  model_gin = tmp_path / 'tiny_model.gin'
  args = [sys.executable, '-m', 'flan_t5x.infer', f'--gin_file={model_gin}', '--gin_file=gin/runs/infer.gin',
          '--multiprocess_gpu', f'--coordinator_address=localhost:{_free_port()}', f'--process_count={HOSTS}']
  args += [f'--gin.{k}={v}' for k, v in bindings.items()]
  workers = [subprocess.Popen(args + [f'--process_index={index}'], cwd=REPO, env=_env(devices=2),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(HOSTS)]
  errors = [worker.communicate(timeout=300)[1] for worker in workers]
  assert [worker.returncode != 0 for worker in workers] == [True] * HOSTS
  assert 'found by host(s) [1]' in errors[0]
  assert 'chunk 1 (lines 6, 8)' in errors[1]  # host 1 has lines 2, 4, 6, 8; chunk 1 is 6 and 8
  after = {p: open(p, 'rb').read() for p in glob.glob(str(out / '**' / '*'), recursive=True) if os.path.isfile(p)}
  assert after == before

  _run_job('infer', 'gin/runs/infer.gin', {**bindings, 'INFER_ON_MISMATCH': "'new_dir'"}, HOSTS, tmp_path)
  records = [json.loads(line) for path in glob.glob(str(tmp_path / 'infer-2' / 'predictions-*.jsonl'))
             for line in open(path)]
  assert sorted(r['index'] for r in records) == list(range(9))
  assert [r['input'] for r in records if r['index'] == 5] == ['copy: alpha beta 5 edited']

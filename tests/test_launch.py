"""Every launch script states its command and expected result, parses, and prints its usage when misused."""
import pathlib
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / 'launch'
SCRIPTS = sorted(LAUNCH.glob('*.sh'))


def test_there_are_launchers_for_one_machine_gpu_nodes_and_tpu_pods():
  names = {path.name for path in SCRIPTS}
  assert {'train.sh', 'slurm_gpu.sh', 'multinode_gpu.sh', 'tpu_vm.sh', 'tpu_vm_pod.sh'} <= names, names


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_header_states_usage_and_expected_result(script):
  header = ''.join(line for line in script.read_text().splitlines(keepends=True)[:25] if line.startswith('#'))
  assert 'Usage' in header and 'Expected result' in header, script.name
  assert subprocess.run(['bash', '-n', str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_without_arguments_prints_usage_and_exits_2(script):
  env = {'PATH': '/usr/bin:/bin'}  # no COORDINATOR etc.
  done = subprocess.run(['bash', str(script)], capture_output=True, text=True, env=env, timeout=30)
  assert done.returncode == 2 and 'Usage' in done.stdout, (script.name, done.stdout, done.stderr)


@pytest.mark.parametrize('engine', ['flan_t5x', 't5x'])
@pytest.mark.parametrize('script, args, job', [
    ('train.sh', ['gin/flan_mix.gin', 'gs://b/run'], 'train'),
    ('eval_rouge.sh', ['gs://b/run/checkpoint_2', 'gs://b/eval'], 'eval'),
    ('multinode_gpu.sh', ['infer', 'gin/infer.gin'], 'infer'),
])
def test_engine_chooses_upstream_t5x_or_flan_t5x_with_the_same_gin_file(tmp_path, engine, script, args, job):
  fake_python = tmp_path / 'python'
  fake_python.write_text('#!/bin/sh\necho "$@"\n')
  fake_python.chmod(0o755)
  env = {'PATH': '/usr/bin:/bin', 'PYTHON': str(fake_python), 'ENGINE': engine,
         'COORDINATOR': 'a:1', 'NUM_NODES': '2', 'NODE_RANK': '0'}
  done = subprocess.run(['bash', str(LAUNCH / script), *args], capture_output=True, text=True, env=env, timeout=30)
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith(f'-m {engine}.{job} --gin_file='), done.stdout


def test_an_unknown_engine_is_refused():
  done = subprocess.run(['bash', str(LAUNCH / 'train.sh'), 'gin/demo.gin', 'runs/x'], capture_output=True, text=True,
                        env={'PATH': '/usr/bin:/bin', 'ENGINE': 't5'}, timeout=30)
  assert done.returncode == 2 and 'expected flan_t5x or t5x' in done.stderr

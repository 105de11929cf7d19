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


@pytest.mark.parametrize('engine', ['flan_t5x', 't5x'])
def test_eval_rouge_reads_a_model_dir_as_its_newest_checkpoint_on_both_engines(tmp_path, engine):
  fake_python = tmp_path / 'python'
  fake_python.write_text('#!/bin/sh\necho "$@"\n')
  fake_python.chmod(0o755)
  env = {'PATH': '/usr/bin:/bin', 'PYTHON': str(fake_python), 'ENGINE': engine}
  run = lambda path: subprocess.run(['bash', str(LAUNCH / 'eval_rouge.sh'), path, 'out', 'gin/eval_demo.gin'],
                                    capture_output=True, text=True, env=env, timeout=30).stdout
  assert "--gin.utils.RestoreCheckpointConfig.mode='latest'" in run('runs/demo')  # T5X needs it for a MODEL_DIR
  assert 'RestoreCheckpointConfig.mode' not in run('runs/demo/checkpoint_300')


def test_a_clone_without_its_venv_gets_one_line_saying_what_to_do(tmp_path):
  clone = tmp_path / 'clone'
  (clone / 'launch' / 'lib').mkdir(parents=True)
  for path in ('train.sh', 'lib/choose_python.sh'):
    (clone / 'launch' / path).write_text((LAUNCH / path).read_text())
  bin_dir = tmp_path / 'bin'  # a python3 on PATH without flan_t5x
  bin_dir.mkdir()
  (bin_dir / 'python3').write_text('#!/bin/sh\nexit 1\n')
  (bin_dir / 'python3').chmod(0o755)
  done = subprocess.run(['bash', str(clone / 'launch' / 'train.sh'), 'gin/demo.gin', 'runs/x'], capture_output=True,
                        text=True, env={'PATH': f'{bin_dir}:/usr/bin:/bin'}, timeout=30)
  assert done.returncode == 2 and done.stderr.count('\n') == 1, done.stderr
  assert done.stderr.startswith('error: no Python that can import flan_t5x') and 'make install' in done.stderr
  assert 'PYTHON=' in done.stderr

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

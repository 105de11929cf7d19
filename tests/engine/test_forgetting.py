"""The forgetting study: metric arithmetic on hand-made matrices; a tiny end-to-end study on demo data."""
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from flan_t5x import forgetting_metrics as fm
from flan_t5x import gin_utils
from tests.conftest import SHARED_DATASETS, SHARED_SPIECE

REPO = gin_utils.REPO_ROOT

MATRIX = {
    'base': {'target': {'rougeLsum': 10.0, 'rouge1': 12.0}, 'a': {'accuracy': 80.0, 'mae': 0.3},
             'b': {'entity_f1': 50.0}, 'out': {'exact_match': 20.0, 'bleu': 5.0}},
    'single': {'target': {'rougeLsum': 30.0, 'rouge1': 33.0}, 'a': {'accuracy': 40.0, 'mae': 1.1},
               'b': {'entity_f1': 30.0}, 'out': {'exact_match': 10.0, 'bleu': 1.0}},
    'multi': {'target': {'rougeLsum': 25.0, 'rouge1': 27.0}, 'a': {'accuracy': 82.0, 'mae': 0.2},
              'b': {'entity_f1': 48.0}, 'out': {'exact_match': 21.0, 'bleu': 6.0}},
}
SUITE = fm.Suite(target=('target',), held_in=('a', 'b'), held_out=('out',))


def test_forgetting_backward_transfer_gain_and_held_out_change():
  derived = fm.derive(MATRIX, SUITE)
  single, multi = derived['single'], derived['multi']
  assert single['primary_metric'] == {'target': 'rougeLsum', 'a': 'accuracy', 'b': 'entity_f1',
                                      'out': 'bleu'}  # BLEU before exact match (code translation)
  assert single['target_gain'] == 20.0 and multi['target_gain'] == 15.0
  assert single['forgetting'] == {'a': 40.0, 'b': 20.0}
  assert single['mean_forgetting'] == 30.0 and single['max_forgetting'] == 40.0
  assert single['backward_transfer'] == -30.0
  assert multi['forgetting'] == {'a': -2.0, 'b': 2.0} and multi['backward_transfer'] == 0.0
  assert single['held_out_change'] == -4.0 and multi['held_out_change'] == 1.0


def test_report_and_errors():
  derived = fm.derive(MATRIX, SUITE)
  report = fm.report_markdown(MATRIX, derived, SUITE, commands=['python -m flan_t5x.train ...'])
  assert '| single | +20.00 | -30.00 | +30.00 | +40.00 | -4.00 |' in report
  assert '| a | held-in | accuracy |  | 80.00 | 82.00 (+2.00) | 40.00 (-40.00) |' in report  # arms sorted
  assert 'python -m flan_t5x.train ...' in report
  with pytest.raises(ValueError, match="No 'base' row"):
    fm.derive({'single': MATRIX['single']}, SUITE)
  with pytest.raises(ValueError, match="'multi' was not evaluated on 'b'"):
    fm.derive({**MATRIX, 'multi': {k: v for k, v in MATRIX['multi'].items() if k != 'b'}}, SUITE)
  with pytest.raises(ValueError, match='none of the primary metrics'):
    fm.primary_metric('t', {'mae': 1.0})


def _run(args, timeout=900):
  env = dict(os.environ, XLA_FLAGS='--xla_backend_optimization_level=0')
  done = subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  return done.stdout


def _study_gin(tmp_path, arms, train_base):
  """A demo study of `arms`; its base trained by the study (`train_base`) or given as a checkpoint."""
  path = tmp_path / f'study_{len(arms)}.gin'
  base = (f"""forgetting.run_study.base_training = @forgetting.BaseTraining()
forgetting.BaseTraining.gin_files = ['gin/demo.gin']
forgetting.BaseTraining.steps = 3
forgetting.BaseTraining.bindings = {{'EVAL_PERIOD': 'None', 'BATCH_SIZE': '4',
  'TASK_FEATURE_LENGTHS': "{{'inputs': 128, 'targets': 32}}", 'train_script.train.use_progress_bar': 'False'}}
BASE_CHECKPOINT = None""" if train_base else f"BASE_CHECKPOINT = '{tmp_path / 'study' / 'base'}'")
  path.write_text(f"""from __gin__ import dynamic_registration
from flan_t5x import forgetting
include 'gin/forgetting/demo_study.gin'
STUDY_DIR = '{tmp_path / 'study'}'
{base}
STEPS_PER_ARM = 2
forgetting.run_study.arms = [{', '.join(f'@{arm}/forgetting.Arm()' for arm in arms)}]
forgetting.run_study.eval_bindings = {{'MAX_EXAMPLES': '3', 'BATCH_SIZE': '8'}}
""")
  return str(path)


@pytest.mark.slow
def test_tiny_study_writes_every_output_and_adds_an_arm_later(tmp_path):
  study = tmp_path / 'study'
  out = _run(['flan_t5x.forgetting', f'--gin_file={_study_gin(tmp_path, ["single", "lora"], train_base=True)}'])
  assert f'its output goes to {study}/logs/train-single_task.log' in out  # where to look while it runs
  for name in ('results.json', 'report.md', 'change.png', 'curves.png', 'config.gin', 'base/arm.json',
               'arms/single_task/arm.json', 'eval/base/results.json', 'eval/single_task/results.json',
               'eval/lora_single_task/results.json'):
    assert (study / name).is_file(), name
  first = json.loads((study / 'results.json').read_text())
  assert set(first['matrix']) == {'base', 'single_task', 'lora_single_task'}
  # The LoRA arm's checkpoint holds adapters and names the base; eval loaded base + adapter.
  lora_eval = json.loads((study / 'eval/lora_single_task/results.json').read_text())
  assert lora_eval['checkpoint']['base']['resolved'] == str(study / 'base' / 'checkpoint_3')
  assert set(first['arms']['single_task']['forgetting']) == {'demo_dialogue_zs', 'demo_review_zs',
                                                             'demo_ner_zs', 'demo_code_zs'}
  assert (study / 'base/checkpoint_3').is_dir()
  assert (study / 'arms/single_task/checkpoint_5').is_dir()  # base step 3 + 2 steps
  logs_before = {p: (study / 'logs' / p).stat().st_mtime for p in os.listdir(study / 'logs')}
  assert 'train-base.log' in logs_before

  # A second arm added later, the base now given as a checkpoint (the one the study trained):
  # only the new arm is trained and evaluated.
  _run(['flan_t5x.forgetting', f'--gin_file={_study_gin(tmp_path, ["single", "lora", "replay"], train_base=False)}'])
  second = json.loads((study / 'results.json').read_text())
  assert set(second['matrix']) == {'base', 'single_task', 'lora_single_task', 'replay_10pct'}
  assert second['matrix']['single_task'] == first['matrix']['single_task']
  for name, mtime in logs_before.items():
    assert (study / 'logs' / name).stat().st_mtime == mtime, f'{name} was run again'
  assert {'train-replay_10pct.log', 'eval-replay_10pct.log'} <= set(os.listdir(study / 'logs'))
  # Every model's and evaluation's command is reported, whichever run made it; the base is now
  # given as a checkpoint, so its training is no longer part of the study.
  base_training = first['commands'][0]
  assert 'flan_t5x.train' in base_training and base_training not in second['commands']
  added = [c for c in second['commands'] if c not in first['commands']]
  assert len(added) == 2 and all('replay_10pct' in c for c in added)
  assert set(first['commands']) - {base_training} <= set(second['commands'])
  report = (study / 'report.md').read_text()
  assert '| replay_10pct |' in report and '## Against single_task' in report
  # Intervals, flags and the side-by-side examples come with every study; the LoRA arm's rate is the adapter default.
  assert second['uncertainty']['num_examples']['demo_support_zs'] == 3
  assert set(second['uncertainty']['arms']['replay_10pct']['change']['demo_support_zs']) >= {'low', 'high', 'p_value'}
  assert set(second['flags']) == {'base', 'single_task', 'lora_single_task', 'replay_10pct'}
  assert second['learning_rates'] == {'single_task': None, 'lora_single_task': 0.001, 'replay_10pct': None}
  assert "base_learning_rate=0.001" in next(c for c in second['commands'] if 'lora_single_task' in c)
  assert (study / 'examples.md').is_file() and (study / 'examples.html').is_file()


def test_study_needs_exactly_one_base(tmp_path):
  from flan_t5x import forgetting
  arm = forgetting.Arm(name='single_task')
  common = dict(study_dir=str(tmp_path), arms=[arm], steps_per_arm=1, train_gin_files=[], eval_gin_files=[],
                target_tasks=['t'], held_in_tasks=[])
  with pytest.raises(ValueError, match='exactly one base'):
    forgetting.run_study(**common)
  with pytest.raises(ValueError, match='exactly one base'):
    forgetting.run_study(**common, base_checkpoint='x',
                         base_training=forgetting.BaseTraining(gin_files=['g.gin'], steps=1))
  with pytest.raises(ValueError, match='steps must be positive'):
    forgetting.BaseTraining(gin_files=['g.gin'], steps=0)


def _readme_cpu_study_command() -> str:
  readme = (pathlib.Path(REPO) / 'README.md').read_text(encoding='utf-8')
  [command] = [line for line in readme.splitlines()
               if line.startswith('FLAN_DATA_DIR=') and 'gin/forgetting/cpu_study.gin' in line]
  return command


@pytest.mark.skipif(not SHARED_DATASETS.is_dir() or not SHARED_SPIECE.is_file(), reason='needs ../shared')
def test_readme_cpu_study_command_runs_as_written_on_shared_data(repo_copy):
  """The README's CPU study on ../shared, from a copy of the root (../shared beside it), with only
  CPU-cost overrides appended: 2 base steps, 1 step per arm, 2 examples per task."""
  (repo_copy.parent / 'shared').symlink_to(SHARED_DATASETS.parent)
  overrides = ['--gin.BASE_STEPS=2', '--gin.STEPS_PER_ARM=1',
               "--gin.forgetting.run_study.eval_bindings={'MAX_EXAMPLES': '2', 'BATCH_SIZE': '2', "
               "'TASK_FEATURE_LENGTHS': \"{'inputs': 64, 'targets': 8}\"}"]
  env_part, command = _readme_cpu_study_command().split(' ', 1)
  key, value = env_part.split('=', 1)
  argv = [sys.executable if word == 'python' else word for word in shlex.split(command)] + overrides
  env = dict(os.environ, PYTHONPATH=str(repo_copy), **{key: value})
  proc = subprocess.run(argv, cwd=repo_copy, env=env, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  study = repo_copy / 'runs' / 'forgetting_cpu'
  results = json.loads((study / 'results.json').read_text())
  assert set(results['matrix']) == {'base', 'single_task', 'multi_task', 'replay_10pct', 'lora_single_task'}
  assert results['uncertainty']['num_examples']['dialogsum_zs'] == 2
  assert (study / 'arms' / 'single_task' / 'checkpoint_3').is_dir()  # base step 2 + 1 step


def test_report_commands_read_as_the_readme_writes_them_and_round_trip_through_a_shell():
  from flan_t5x import forgetting  # pylint: disable=g-import-not-at-top
  args = ['-m', 'flan_t5x.train', '--gin_file=gin/demo.gin', "--gin.MODEL_DIR='/tmp/a b'",
          '--gin.TRAIN_STEPS=400', "--gin.MIXTURE_OR_TASK_NAME='x'", 'say "hi" $HOME']
  words = [forgetting.shell_word(a) for a in args]
  assert words[2:5] == ['--gin_file=gin/demo.gin', '--gin.MODEL_DIR="\'/tmp/a b\'"', '--gin.TRAIN_STEPS=400']
  assert shlex.split(' '.join(words)) == args

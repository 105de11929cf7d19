"""python -m flan_t5x.plan: the jobs' own train step and decode compiled by XLA:TPU for real slice
topologies (libtpu's compile-only devices), bytes per chip against a hand count, a configuration
over HBM reported with its fix, and one-line errors for an unknown slice and a missing libtpu."""
import json
import os
import re
import subprocess
import sys

import pytest

from flan_t5x import aot_plan
from flan_t5x import tpu_slices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plan(args, tmp_path, hide_libtpu=False):
  """Runs the plan job as a user would, from the repository root; XLA flags of the test process
  (CPU compile shortcuts) are not the user's, so they are dropped."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  command = [sys.executable, '-m', 'flan_t5x.plan', *args]
  if hide_libtpu:  # as on a machine without the [tpu] extra
    command = [sys.executable, '-c', "import sys, runpy; sys.modules['libtpu'] = None; "
               "sys.argv = ['plan'] + sys.argv[1:]; runpy.run_module('flan_t5x.plan', run_name='__main__')", *args]
  return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


def _planned(tmp_path, *args, name='plan.json'):
  """Runs the plan with --json; (the finished process, its reports)."""
  report = tmp_path / name
  done = _plan([*args, f'--json={report}'], tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  return done, json.loads(report.read_text())['reports']


def test_slice_names_map_to_chips_and_topologies():
  assert tpu_slices.parse_slice('v4-8').num_chips == 4
  assert tpu_slices.parse_slice('v4-32').jax_topology_name == 'v4:2x2x4'
  assert tpu_slices.parse_slice('v5p-8').jax_topology_name == 'v5:2x2x1'
  assert tpu_slices.parse_slice('v5litepod-16').jax_topology_name == 'v5e:4x4'
  assert tpu_slices.parse_slice('v5e-16').name == 'v5litepod-16'
  assert tpu_slices.parse_slice('v6e-8').jax_topology_name == 'v6e:2x4'
  with pytest.raises(ValueError, match=r"unknown TPU slice 'v4-6': v4 comes as v4-8, v4-16"):
    tpu_slices.parse_slice('v4-6')


def test_unknown_topology_is_one_line(tmp_path):
  done = _plan(['--gin_file=gin/demo.gin', '--topology=v9-8'], tmp_path)
  assert done.returncode == 2
  lines = done.stderr.strip().splitlines()
  assert lines == [lines[-1]] and lines[0].startswith("error: unknown TPU slice 'v9-8': expected a Cloud TPU "
                                                      'accelerator type, one of v4-8, v4-16'), done.stderr
  assert 'v5litepod-16' in lines[0] and 'v6e-8' in lines[0]


def test_missing_libtpu_is_one_line(tmp_path):
  done = _plan(['--gin_file=gin/demo.gin', '--topology=v4-8'], tmp_path, hide_libtpu=True)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: planning for a TPU needs libtpu, which is not installed: pip install -e '.[tpu]'"], done.stderr


def _hand_count_demo_model(num_partitions: int) -> tuple[int, int]:
  """Bytes per chip of gin/demo_model.gin's float32 parameters and Adafactor state, counted from its
  dimensions and T5X's rules: vocab, heads, joined_kv and mlp split over `num_partitions`, embed
  and norms replicated; Adafactor keeps a row and a column vector (replicated) for a kernel whose
  two dims are at least 128, else a full second moment sharded like the parameter."""
  vocab, emb, heads, kv, mlp, buckets, p = 384, 128, 4, 4 * 32, 256, 32, num_partitions
  kernels = []  # (shape, elements per chip)
  kernels.append(((vocab, emb), vocab // p * emb))           # token embedding
  kernels.append(((emb, vocab), emb * vocab // p))           # logits_dense
  attention = [((emb, kv), emb * kv // p)] * 3 + [((kv, emb), kv // p * emb)]
  mlp_block = [((emb, mlp), emb * mlp // p)] * 2 + [((mlp, emb), mlp // p * emb)]
  kernels += (attention + mlp_block) * 2                     # 2 encoder layers
  kernels += (attention * 2 + mlp_block) * 2                 # 2 decoder layers (self + cross attention)
  relpos = [((heads, buckets), heads // p * buckets)] * 2    # encoder and decoder, not factored
  norms = [((emb,), emb)] * (2 * 2 + 3 * 2 + 2)              # replicated
  params = sum(n for _, n in kernels + relpos + norms)
  factored = sum(shape[0] + shape[1] + 1 for shape, _ in kernels)   # v_row, v_col, a 1-element v
  unfactored = sum(n + 2 for _, n in relpos + norms)                 # v, and 1-element v_row, v_col
  counts = 2  # the factored-RMS step count and the learning-rate schedule's step count
  return 4 * params, 4 * (factored + unfactored + counts)


@pytest.mark.slow
def test_tiny_train_and_decode_compile_for_v4_and_v5e(tmp_path):
  done, plans = _planned(tmp_path, '--gin_file=gin/demo.gin', '--topology=v4-8', '--topology=v5litepod-4',
                         '--gin.partitioning.PjitPartitioner.num_partitions=2', name='train.json')
  assert 'v4-8: 4 v4 chips (2x2x1), 32 GiB HBM' in done.stdout and 'FITS' in done.stdout
  params_bytes, opt_bytes = _hand_count_demo_model(2)
  for slice_report, name in zip(plans, ('v4-8', 'v5litepod-4')):
    plan = slice_report['plans'][0]
    assert slice_report['slice'] == name and plan['job'] == 'train'
    assert plan['mesh'] == {'data': 2, 'model': 2}
    assert plan['state_bytes'] == {'params': params_bytes, 'opt_state': opt_bytes}
    assert plan['fits'] and plan['argument_bytes'] >= params_bytes + opt_bytes
    assert plan['total_bytes'] < 1 << 30 and plan['xla_flops'] > 0 and plan['projection']['step_seconds'] > 0
    assert plan['collectives']['all-reduce']['count'] > 0  # the data-parallel gradient reduction
    assert 0 < plan['projection']['mfu'] < 1
    # The model's matmul FLOPs over 4 chips against XLA's count per chip: the same step. XLA also
    # counts elementwise work and the chunked loss's recomputed logits, a large share at these dims.
    assert 0.6 < plan['model_flops'] / 4 / plan['xla_flops'] < 1.0

  from flan_t5x import plan as plan_job  # pylint: disable=g-import-not-at-top
  _, decode_reports = _planned(tmp_path, '--gin_file=gin/eval_demo.gin', '--topology=v5litepod-4', '--topology=v4-8',
                               name='decode.json')
  for slice_report in decode_reports:
    plan = slice_report['plans'][0]
    assert slice_report['job'] == 'eval' and plan['job'] == 'decode' and plan['fits']
    assert plan['batch_size'] == 52  # eval_demo.gin's 50 rows padded to the 4 data shards
    assert plan['lengths'] == plan_job.DEFAULT_DECODE_LENGTHS
    assert plan['state_bytes']['params'] == _hand_count_demo_model(1)[0]  # one partition: whole parameters
    assert plan['settings']['method'] == 'beam'  # T5X's default decode_fn, as the eval job decodes


@pytest.mark.slow
def test_configuration_over_hbm_is_reported_with_its_fix(tmp_path):
  done, reports = _planned(tmp_path, '--gin_file=gin/demo.gin', '--topology=v5litepod-4', '--gin.BATCH_SIZE=1024',
                           "--gin.TASK_FEATURE_LENGTHS={'inputs': 4096, 'targets': 512}")
  plan = reports[0]['plans'][0]
  assert not plan['fits'] and plan['total_bytes'] > 16 * 2**30 and 'RESOURCE_EXHAUSTED' in plan['error']
  assert 'DOES NOT FIT' in done.stdout
  fix = next(line for line in plan['suggestions'] if line.startswith('num_microbatches='))
  assert '--gin.trainer.Trainer.num_microbatches=' in fix and 'would fit: num_microbatches=' in done.stdout


def test_collectives_are_read_from_hlo_text():
  hlo = '\n'.join([
      '  %all-reduce.1 = f32[128,512]{1,0} all-reduce(f32[128,512]{1,0} %x), replica_groups={{0,1}}',
      '  %ag = (bf16[4,8]{1,0}, bf16[8,8]{1,0}) all-gather-start(bf16[4,8]{1,0} %y), dimensions={0}',
      '  %ag.done = bf16[8,8]{1,0} all-gather-done((bf16[4,8]{1,0}, bf16[8,8]{1,0}) %ag)',
      '  %rs = bf16[64]{0} reduce-scatter(bf16[128]{0} %z), dimensions={0}',
      '  %add = f32[2]{0} add(f32[2]{0} %a, f32[2]{0} %b)'])
  assert aot_plan.collectives(hlo) == {
      'all-reduce': {'count': 1, 'bytes': 128 * 512 * 4},
      'all-gather': {'count': 1, 'bytes': (4 * 8 + 8 * 8) * 2 // 2},
      'reduce-scatter': {'count': 1, 'bytes': 64 * 2}}


def test_train_flops_count_matches_the_t5_formula():
  from flan_t5x import network  # pylint: disable=g-import-not-at-top
  config = network.T5Config(vocab_size=32128, emb_dim=768, num_heads=12, num_encoder_layers=12,
                            num_decoder_layers=12, head_dim=64, mlp_dim=2048)
  # 6 x parameters x tokens (Kaplan et al.) per stack: encoder tokens meet the encoder's weights and
  # the decoder's cross-attention keys and values, decoder tokens the rest and the logits. The count
  # adds attention's score and value matmuls (about 10% here), so it lies within 25% above.
  emb, mlp, vocab, layers, inputs, targets = 768, 2048, 32128, 12, 512, 128
  encoder_weights = layers * (4 * emb * emb + 3 * emb * mlp) + layers * 2 * emb * emb
  decoder_weights = layers * (6 * emb * emb + 3 * emb * mlp) + emb * vocab
  approx = 6 * (encoder_weights * inputs + decoder_weights * targets)
  assert 1.0 < aot_plan.t5_train_flops(config, 1, inputs, targets) / approx < 1.25


def readme_plan_commands() -> list[str]:
  text = open(os.path.join(REPO_ROOT, 'README.md'), encoding='utf-8').read()
  section = text.split('## Before you book a slice', 1)[1]
  block = section.split('```bash\n', 1)[1].split('```', 1)[0]
  return [line for line in block.splitlines() if line.startswith('python -m flan_t5x.plan')]


# The CPU-cost overrides appended to each README command: the tiny model (one partition, no
# microbatches), a batch of one row per chip of v4-32 and short lengths.
CPU_COST = ['--gin_file=gin/sizes/tiny.gin', '--gin.BATCH_SIZE=16', "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}"]
DECODE_CPU_COST = ['--gin_file=gin/sizes/tiny.gin', '--decode_lengths=inputs:64,targets:16']


@pytest.mark.slow
def test_readme_plan_commands_run_as_written(repo_copy):
  import shlex  # pylint: disable=g-import-not-at-top
  commands = readme_plan_commands()
  assert len(commands) == 3
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  for command in commands:
    args = shlex.split(command)
    extra = DECODE_CPU_COST if 'eval_heldout' in command else CPU_COST
    done = subprocess.run([sys.executable, *args[1:], *extra], cwd=repo_copy, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, command + '\n' + done.stderr[-3000:]
    assert 'FITS' in done.stdout, done.stdout
    if '--sweep' in command:  # widths 1, 2 and 4 (the tiny model's 4 heads split no further)
      assert done.stdout.count('  sweep: mesh') >= 2 and 'fastest that fits: --gin.partitioning' in done.stdout
    if 'v5litepod-16' in command:
      assert 'v5litepod-16: 16 v5litepod chips (4x4), 16 GiB HBM' in done.stdout and '-- eval' in done.stdout


def test_the_committed_plans_render_into_the_docs_tables(tmp_path):
  """docs/tpu_plans.md's tables come from the committed plans: rendering them again gives the same."""
  table = tmp_path / 'tables.md'
  done = subprocess.run([sys.executable, 'bench/tpu_plans.py', '--render_only', f'--table={table}'], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  recommended, grid = table.read_text().strip().split('\n\n', 1)
  docs = open(os.path.join(REPO_ROOT, 'docs', 'tpu_plans.md'), encoding='utf-8').read()
  assert recommended in docs and grid in docs
  # The published comparison the docs quote is the one the committed plans give.
  ratio, size = re.search(r'projected / measured MFU: ([0-9.]+) \((\w+) on v5litepod', done.stdout).groups()
  assert f'Projected / measured = **{ratio}**' in docs and float(ratio) < 1
  names = {'small': 'Small', 'base': 'Base', 'large': 'Large', 'xl': 'XL', 'xxl': 'XXL'}
  assert f'Our best projection on the same chip is Flan-T5 {names[size]} with' in docs


@pytest.mark.slow
def test_a_grid_cell_runs_the_plan_and_resumes_from_its_json(tmp_path):
  args = [sys.executable, 'bench/tpu_plans.py', '--sizes=tiny', '--jobs=eval', '--slices=v5litepod-4',
          f'--plans_dir={tmp_path}']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  first = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  assert '[tpu_plans] tiny eval v5litepod-4:' in first.stdout and (tmp_path / 'tiny_eval_v5litepod-4.json').exists()
  assert ('| tiny | eval | v5litepod-4 | yes |' in first.stdout and
          '`python -m flan_t5x.plan --gin_file=gin/eval_heldout.gin --gin_file=gin/sizes/tiny.gin '
          '--topology=v5litepod-4`' in first.stdout)
  again = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and '[tpu_plans] tiny eval' not in again.stdout  # read back, not compiled again

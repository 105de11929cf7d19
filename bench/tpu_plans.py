r"""The TPU plan grid behind docs/tpu_plans.md: `python -m flan_t5x.plan` per size, slice and job.

  python bench/tpu_plans.py --sizes=small,base --slices=v4-8,v4-32 --jobs=train,eval
  python bench/tpu_plans.py --render_only      # the table from the plans already in --plans_dir

Each cell runs the users' own files as a user would (train: gin/flan_mix.gin, eval:
gin/eval_heldout.gin, each followed by gin/sizes/<size>.gin except for Base, which they ship),
with `--gin.partitioning.PjitPartitioner.num_partitions=<chips>` appended only where the size's
partitions exceed the slice's chips. Each plan's JSON lands in --plans_dir (docs/tpu_plans/, one
file per cell, committed: an interrupted grid resumes where it stopped), and the tables of all of
them are printed and written to --table (markdown) with a summary JSON under bench/results/. The projection is held
against a published measured figure (PUBLISHED) as a ratio.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_results  # noqa: E402  pylint: disable=wrong-import-position
from flan_t5x import tpu_slices  # noqa: E402  pylint: disable=wrong-import-position

SIZES = ('small', 'base', 'large', 'xl', 'xxl')
SLICES = ('v4-8', 'v4-32', 'v5litepod-16', 'v5p-8')
JOBS = ('train', 'eval')
JOB_FILES = {'train': 'gin/flan_mix.gin', 'eval': 'gin/eval_heldout.gin'}

# A measured training figure of a dense Transformer on TPU, from MaxText's README (AI-Hypercomputer/
# maxtext, "Runtime Performance Results"): a 32B decoder-only model on one v5e-256 slice
# (per_device_batch_size=4, 2048 tokens, remat 'full', flash attention) ran at 132 TFLOP/s per chip,
# 66.86% MFU. It is the nearest published TPU figure we found: no T5 or Flan-T5 training throughput
# on TPU is published.
PUBLISHED = {'source': 'MaxText README, 32B on v5e-256 (AI-Hypercomputer/maxtext)', 'chip': 'v5litepod',
             'mfu': 0.6686, 'tflops_per_chip': 132.0}


def cell_command(size: str, slice_name: str, job: str, json_path: str) -> list[str]:
  files = [JOB_FILES[job]] + ([] if size == 'base' else [f'gin/sizes/{size}.gin'])
  command = [sys.executable, '-m', 'flan_t5x.plan', *[f'--gin_file={f}' for f in files],
             f'--topology={slice_name}']
  partitions = _size_partitions(size)
  chips = tpu_slices.parse_slice(slice_name).num_chips
  if partitions > chips:
    command.append(f'--gin.partitioning.PjitPartitioner.num_partitions={chips}')
  return command + [f'--json={json_path}']


def _size_partitions(size: str) -> int:
  path = 'gin/sizes/base.gin' if size == 'base' else f'gin/sizes/{size}.gin'
  for line in open(path, encoding='utf-8'):
    if line.startswith('partitioning.PjitPartitioner.num_partitions'):
      return int(line.split('=')[1])
  return 1


def user_command(command: list[str]) -> str:
  """As a user types it (from the repository root), without the --json this grid adds."""
  args = [a for a in command[3:] if not a.startswith('--json=')]
  return 'python -m flan_t5x.plan ' + ' '.join(args)


def run_cell(size: str, slice_name: str, job: str, plans_dir: str) -> dict:
  path = os.path.join(plans_dir, f'{size}_{job}_{slice_name}.json')
  command = cell_command(size, slice_name, job, path)
  if not os.path.exists(path):
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 1) or not os.path.exists(path):
      raise RuntimeError(f'{user_command(command)} failed:\n{done.stderr[-3000:]}')
    print(f'[tpu_plans] {size} {job} {slice_name}: {time.perf_counter() - start:.0f} s', flush=True)
  return {'size': size, 'slice': slice_name, 'job': job, 'command': user_command(command),
          'plan': json.load(open(path, encoding='utf-8'))['reports'][0]}


def row(cell: dict) -> dict:
  report = cell['plan']
  base = {'size': cell['size'], 'slice': cell['slice'], 'job': cell['job'], 'command': cell['command']}
  if report.get('refused'):
    return dict(base, fits=None, note=report['refused'])
  plan = report['plans'][0]
  projection = plan['projection']
  return dict(base, fits=plan['fits'], hbm_gib=plan['total_bytes'] / 2**30,
              chip_hbm_gib=report['chip']['hbm_gib'], partitions=plan['mesh'].get('model', 1),
              microbatches=plan['settings'].get('num_microbatches'),
              tokens_per_second_per_chip=projection['tokens_per_second_per_chip'], mfu=projection['mfu'],
              compile_seconds=plan['compile_seconds'], note=None if plan['fits'] else
              (plan['suggestions'][0] if plan['suggestions'] else plan['error']))


def markdown(rows: list[dict]) -> str:
  lines = ['| size | job | slice | fits | HBM per chip (GiB) | partitions | microbatches | tokens/s/chip '
           '(projected) | MFU (projected) | compile (s) | command / note |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    if r['fits'] == 'missing':
      lines.append(f"| {r['size']} | {r['job']} | {r['slice']} | not planned yet | | | | | | | `{r['command']}` |")
      continue
    if r['fits'] is None:
      lines.append(f"| {r['size']} | {r['job']} | {r['slice']} | no | | | | | | | `{r['command']}`: {r['note']} |")
      continue
    tokens = f"{r['tokens_per_second_per_chip']:,.0f}" if r['tokens_per_second_per_chip'] else ''
    mfu = f"{100 * r['mfu']:.0f}%" if r['mfu'] else ''
    note = f": {r['note']}" if r['note'] else ''
    lines.append(f"| {r['size']} | {r['job']} | {r['slice']} | {'yes' if r['fits'] else 'no'} | "
                 f"{r['hbm_gib']:.1f} of {r['chip_hbm_gib']:g} | {r['partitions']} | {r['microbatches'] or ''} | "
                 f"{tokens} | {mfu} | {r['compile_seconds']:.0f} | `{r['command']}`{note} |")
  return '\n'.join(lines)


# The slice each size's gin/sizes file (and gin/flan_mix.gin for Base) is set up to fit.
RECOMMENDED = {'small': 'v4-8', 'base': 'v4-8', 'large': 'v4-32', 'xl': 'v4-32', 'xxl': 'v4-64'}


def recommended_markdown(rows: list[dict]) -> str:
  """One line per size: its recommended slice's train and eval plans."""
  lines = ['| size | slice | train: fits, HBM per chip (GiB) | partitions x microbatches | train tokens/s/chip, MFU '
           '(projected) | eval: fits, HBM per chip (GiB) | eval tokens/s/chip (projected) |',
           '|---|---|---|---|---|---|---|']
  by_cell = {(r['size'], r['job'], r['slice']): r for r in rows if r['fits'] != 'missing'}
  for size, slice_name in RECOMMENDED.items():
    train, evaluation = by_cell.get((size, 'train', slice_name)), by_cell.get((size, 'eval', slice_name))
    if train is None and evaluation is None:
      continue

    def fit(r):
      if r is None:
        return 'not planned'
      if r['fits'] is None:
        return f"no: {r['note']}"
      return f"{'yes' if r['fits'] else 'no'}, {r['hbm_gib']:.1f} of {r['chip_hbm_gib']:g}"
    speed = (f"{train['tokens_per_second_per_chip']:,.0f}, {100 * train['mfu']:.0f}%"
             if train and train['fits'] else '')
    layout = f"{train['partitions']} x {train['microbatches']}" if train and train['fits'] is not None else ''
    eval_speed = (f"{evaluation['tokens_per_second_per_chip']:,.0f}" if evaluation and evaluation['fits'] else '')
    lines.append(f'| {size} | {slice_name} | {fit(train)} | {layout} | {speed} | {fit(evaluation)} | {eval_speed} |')
  return '\n'.join(lines)


def against_published(rows: list[dict]) -> dict | None:
  """Our projected MFU for a fitting train cell on the published figure's chip, over the figure's
  measured MFU: how far above a measured run the roofline projection sits."""
  same_chip = [r for r in rows if r['job'] == 'train' and r['fits'] is True and r['slice'].startswith(PUBLISHED['chip'])]
  if not same_chip:
    return None
  best = max(same_chip, key=lambda r: r['mfu'])
  return {'published': PUBLISHED, 'ours': {k: best[k] for k in ('size', 'slice', 'mfu')},
          'projected_over_measured_mfu': best['mfu'] / PUBLISHED['mfu']}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default=','.join(SIZES))
  parser.add_argument('--slices', default=','.join(SLICES))
  parser.add_argument('--jobs', default=','.join(JOBS))
  # Committed beside docs/tpu_plans.md: the plans behind its tables, and where a grid resumes.
  parser.add_argument('--plans_dir', default=os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'docs', 'tpu_plans'))
  parser.add_argument('--table', default=None, help='Also write the markdown table to this file.')
  parser.add_argument('--render_only', action='store_true', help='Only the cells already planned.')
  args = parser.parse_args()
  os.makedirs(args.plans_dir, exist_ok=True)
  cells, missing = [], []
  for size in args.sizes.split(','):
    for job in args.jobs.split(','):
      for slice_name in args.slices.split(','):
        path = os.path.join(args.plans_dir, f'{size}_{job}_{slice_name}.json')
        if args.render_only and not os.path.exists(path):
          missing.append({'size': size, 'slice': slice_name, 'job': job, 'fits': 'missing',
                          'command': user_command(cell_command(size, slice_name, job, path))})
          continue
        cells.append(run_cell(size, slice_name, job, args.plans_dir))
  rows = [row(cell) for cell in cells] + missing
  # A recommended slice outside the grid (XXL's v4-64): its planned cells, for the recommended table.
  extra = [row(run_cell(size, slice_name, job, args.plans_dir)) for size, slice_name in RECOMMENDED.items()
           for job in args.jobs.split(',') if slice_name not in args.slices.split(',') and size in args.sizes
           and os.path.exists(os.path.join(args.plans_dir, f'{size}_{job}_{slice_name}.json'))]
  table = markdown(rows)
  print(table)
  print()
  print(recommended_markdown(rows + extra))
  comparison = against_published(rows)
  if comparison:
    print(f"projected / measured MFU: {comparison['projected_over_measured_mfu']:.2f} "
          f"({comparison['ours']['size']} on {comparison['ours']['slice']} against {PUBLISHED['source']})")
  if args.table:
    with open(args.table + '.tmp', 'w', encoding='utf-8') as f:
      f.write(recommended_markdown(rows + extra) + '\n\n' + table + '\n')
    os.replace(args.table + '.tmp', args.table)
  print(bench_results.write_json('tpu_plans', {'rows': rows + extra, 'against_published': comparison}))


if __name__ == '__main__':
  main()

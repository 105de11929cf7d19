r"""Compares eval runs: one markdown table per task and per template, with deltas vs the first run.

  python -m flan_t5x.compare runs/a/eval runs/b/eval [--png chart.png]

Each RUN is an EVAL_OUTPUT_DIR of `flan_t5x.eval` (it reads results.json). `--png`
draws a bar chart of each task's metrics (matplotlib).

Results are never mixed across checkpoints: a RUN whose results.json and <task>.json files
record different checkpoint fingerprints (results of several eval runs in one directory) is
refused; `--expect RUN=CHECKPOINT_PATH` (RUN as given or its directory name) refuses unless
RUN's results come from that checkpoint as it is now; two RUNs from the same checkpoint get a
warning (e.g. "base" and "finetuned" evaluated from one checkpoint by mistake).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Mapping, Sequence

GROUPS = (('metrics', ''), ('rank_classification', 'rank '))


def _read_results(path: str) -> dict:
  results_path = os.path.join(path, 'results.json')
  if not os.path.exists(results_path):
    raise ValueError(f'{path}: no results.json; expected an EVAL_OUTPUT_DIR written by flan_t5x.eval.')
  with open(results_path) as f:
    return json.load(f)


def run_checkpoint(path: str) -> dict | None:
  """The checkpoint fingerprint all of an eval dir's results record (None: written before fingerprints).

  ValueError if its results.json and <task>.json files name different checkpoints.
  """
  from flan_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top  (jax: only when needed)
  summary = _read_results(path)
  fingerprint = summary.get('checkpoint')
  sources = [('results.json', fingerprint)]
  sources += [(f'results.json task {task}', result.get('checkpoint')) for task, result in summary['tasks'].items()]
  for task in summary['tasks']:
    task_path = os.path.join(path, f'{task}.json')
    if os.path.exists(task_path):
      with open(task_path) as f:
        sources.append((f'{task}.json', json.load(f).get('checkpoint')))
  for name, other in sources:
    if (other is None) != (fingerprint is None) or (
        other is not None and not checkpoint_import.same_checkpoint(other, fingerprint)):
      raise ValueError(f'{path}: mixes results of different checkpoints: results.json is from '
                       f'{checkpoint_import.describe_checkpoint(fingerprint)}, {name} from '
                       f'{checkpoint_import.describe_checkpoint(other)}. Re-run flan_t5x.eval into an '
                       'empty EVAL_OUTPUT_DIR.')
  return fingerprint


def load_run(path: str) -> dict:
  """{task: result} of an eval dir whose results all come from one checkpoint (see run_checkpoint)."""
  run_checkpoint(path)
  return _read_results(path)['tasks']


def check_checkpoints(run_dirs: Sequence[str], expect: Mapping[str, str] | None = None) -> list[str]:
  """Warnings for runs from the same checkpoint; ValueError for a run not from its `expect`ed checkpoint.

  `expect`: {run dir as given, or its directory name: CHECKPOINT_PATH}.
  """
  from flan_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top
  fingerprints = {d: run_checkpoint(d) for d in run_dirs}
  for key, checkpoint_path in (expect or {}).items():
    matches = [d for d in run_dirs if key in (d, os.path.basename(os.path.normpath(d)))]
    if not matches:
      raise ValueError(f'--expect {key}={checkpoint_path}: {key} is none of the runs {list(run_dirs)}.')
    expected = checkpoint_import.checkpoint_fingerprint(checkpoint_path)
    for run_dir in matches:
      recorded = fingerprints[run_dir]
      if recorded is None:
        raise ValueError(f'{run_dir}: its results record no checkpoint fingerprint (written before flan-t5x '
                         f'recorded them), so they cannot be checked against {checkpoint_path}; re-run the eval.')
      if not checkpoint_import.same_checkpoint(recorded, expected):
        raise ValueError(f'{run_dir}: results come from {checkpoint_import.describe_checkpoint(recorded)}, '
                         f'not from the expected {checkpoint_path} = '
                         f'{checkpoint_import.describe_checkpoint(expected)}.')
  warnings = []
  unique = [d for i, d in enumerate(run_dirs)  # each directory once
            if os.path.abspath(d) not in {os.path.abspath(e) for e in run_dirs[:i]}]
  for i, a in enumerate(unique):
    for b in unique[i + 1:]:
      if checkpoint_import.same_checkpoint(fingerprints[a], fingerprints[b]):
        warnings.append(f'{a} and {b} come from the same checkpoint, '
                        f'{checkpoint_import.describe_checkpoint(fingerprints[a])}.')
  return warnings


def _metric_values(result: dict) -> dict[str, float]:
  return {f'{prefix}{name}': value for group, prefix in GROUPS for name, value in result.get(group, {}).items()}


def _row(label: str, values: Sequence[dict], names: Sequence[str]) -> list[str]:
  cells = [label]
  for name in names:
    base = values[0].get(name)
    for index, run_values in enumerate(values):
      value = run_values.get(name)
      if value is None:
        cells.append('-')
      elif index == 0 or base is None:
        cells.append(f'{value:.2f}')
      else:
        cells.append(f'{value:.2f} ({value - base:+.2f})')
  return cells


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows])


def compare(run_dirs: Sequence[str], expect: Mapping[str, str] | None = None) -> str:
  """Markdown: per task, rows = overall and each template, columns = metric x run (delta vs run 1).

  ValueError if a run mixes checkpoints or is not from its `expect`ed one (check_checkpoints);
  runs from the same checkpoint are warned about on stderr.
  """
  for warning in check_checkpoints(run_dirs, expect):
    print(f'warning: {warning}', file=sys.stderr)
  runs = [load_run(d) for d in run_dirs]
  labels = [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
  if len(set(labels)) < len(labels):
    labels = list(run_dirs)
  tasks = list(dict.fromkeys(t for run in runs for t in run))
  sections = []
  for task in tasks:
    present = [run.get(task, {}) for run in runs]
    names = list(dict.fromkeys(n for r in present for n in _metric_values(r)))
    header = ['template'] + [f'{n} [{label}]' for n in names for label in labels]
    rows = [_row('all', [_metric_values(r) for r in present], names)]
    templates = list(dict.fromkeys(t for r in present for t in r.get('by_template', {})))
    for template in sorted(templates, key=lambda t: int(t)):
      rows.append(_row(template, [_metric_values(r.get('by_template', {}).get(template, {})) for r in present],
                       names))
    sections.append(f'### {task}\n\n' + _table(header, rows))
  return '\n\n'.join(sections) + '\n'


def bar_chart(run_dirs: Sequence[str], path: str) -> None:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit('--png needs matplotlib, which is not installed: pip install matplotlib') from None
  runs = [load_run(d) for d in run_dirs]
  bars = [(f'{task}\n{name}', [_metric_values(run.get(task, {})).get(name, 0.0) for run in runs])
          for task in dict.fromkeys(t for run in runs for t in run)
          for name in dict.fromkeys(n for run in runs for n in _metric_values(run.get(task, {})))]
  width = 0.8 / len(runs)
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(bars)), 4))
  for index, run_dir in enumerate(run_dirs):
    ax.bar([i + index * width for i in range(len(bars))], [values[index] for _, values in bars], width,
           label=run_dir)
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(bars))], [label for label, _ in bars], fontsize=7)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('runs', nargs='+', help='EVAL_OUTPUT_DIRs of flan_t5x.eval; the first is the baseline')
  parser.add_argument('--png', help='also write a bar chart here (needs matplotlib)')
  parser.add_argument('--expect', action='append', default=[], metavar='RUN=CHECKPOINT_PATH',
                      help='refuse unless RUN (as given, or its directory name) was evaluated from this '
                           'checkpoint; repeatable')
  args = parser.parse_args(argv)
  try:
    expect = {}
    for item in args.expect:
      if '=' not in item:
        raise ValueError(f'--expect {item!r}: expected RUN=CHECKPOINT_PATH.')
      run, checkpoint_path = item.split('=', 1)
      expect[run] = checkpoint_path
    print(compare(args.runs, expect))
  except (ValueError, FileNotFoundError) as err:
    print(f'error: {err}', file=sys.stderr)
    return 2
  if args.png:
    bar_chart(args.runs, args.png)
    print(f'wrote {args.png}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

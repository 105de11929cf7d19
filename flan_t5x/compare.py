r"""Compares eval runs: one markdown table per task and per template, with deltas vs the first run.

  python -m flan_t5x.compare runs/a/eval runs/b/eval [--png chart.png]

Each RUN is an EVAL_OUTPUT_DIR of `flan_t5x.eval` (it reads results.json). `--png`
draws a bar chart of each task's metrics; it needs matplotlib, which flan-t5x
does not depend on (install it with `pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

GROUPS = (('metrics', ''), ('rank_classification', 'rank '))


def load_run(path: str) -> dict:
  results_path = os.path.join(path, 'results.json')
  if not os.path.exists(results_path):
    raise ValueError(f'{path}: no results.json; expected an EVAL_OUTPUT_DIR written by flan_t5x.eval.')
  with open(results_path) as f:
    return json.load(f)['tasks']


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


def compare(run_dirs: Sequence[str]) -> str:
  """Markdown: per task, rows = overall and each template, columns = metric x run (delta vs run 1)."""
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
  args = parser.parse_args(argv)
  try:
    print(compare(args.runs))
  except ValueError as err:
    print(f'error: {err}', file=sys.stderr)
    return 2
  if args.png:
    bar_chart(args.runs, args.png)
    print(f'wrote {args.png}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

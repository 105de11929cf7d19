"""Does finetuning make the model forget? The arithmetic over an evaluation matrix, and its report.

R[model][task] holds each task's metrics for the base model and every finetuned arm (read from
`flan_t5x.eval` output directories). Each task is scored by one primary metric where higher is
better (ROUGE-Lsum, accuracy, entity F1, BLEU, exact match). For an arm, as in the continual
learning literature (Lopez-Paz & Ranzato 2017; Scialom et al. 2022):

- gain on the target task:  R[arm, target] - R[base, target]
- forgetting of a held-in task (one the base could do and the arm did not train on as target):
  R[base, task] - R[arm, task]   (positive: the arm lost that skill)
- backward transfer: the mean over held-in tasks of R[arm, task] - R[base, task] (= -mean forgetting)
- held-out change: the mean over held-out tasks (no arm trained on them) of R[arm] - R[base]
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

# Preferred primary metric per task, first match wins; all are higher-is-better.
PRIMARY_METRICS = ('rougeLsum', 'accuracy', 'entity_f1', 'bleu', 'exact_match', 'rouge1')

Matrix = dict[str, dict[str, dict[str, float]]]  # model -> task -> metric -> value


@dataclasses.dataclass(frozen=True)
class Suite:
  """Which evaluated tasks play which role."""
  target: tuple[str, ...]
  held_in: tuple[str, ...]
  held_out: tuple[str, ...] = ()

  @property
  def all(self) -> tuple[str, ...]:
    return self.target + self.held_in + self.held_out


def read_eval_dir(path: str) -> dict[str, dict[str, float]]:
  """{task: {metric: value}} of a flan_t5x.eval output directory (rank classification as 'rank_<m>')."""
  results_path = os.path.join(path, 'results.json')
  if not os.path.exists(results_path):
    raise FileNotFoundError(f'{path}: no results.json; expected an EVAL_OUTPUT_DIR written by flan_t5x.eval.')
  with open(results_path) as f:
    tasks = json.load(f)['tasks']
  return {task: {**result.get('metrics', {}),
                 **{f'rank_{k}': v for k, v in result.get('rank_classification', {}).items()}}
          for task, result in tasks.items()}


def primary_metric(task: str, metrics: Mapping[str, float]) -> str:
  for name in PRIMARY_METRICS:
    if name in metrics:
      return name
  raise ValueError(f'Task {task!r} has none of the primary metrics {PRIMARY_METRICS}; it has {sorted(metrics)}.')


def _score(matrix: Matrix, model: str, task: str, metric: str) -> float:
  if task not in matrix[model]:
    raise ValueError(f'{model!r} was not evaluated on {task!r}; evaluated: {sorted(matrix[model])}.')
  return float(matrix[model][task][metric])


def _mean(values: Sequence[float]) -> float | None:
  return sum(values) / len(values) if values else None


def derive(matrix: Matrix, suite: Suite, base: str = 'base') -> dict[str, dict]:
  """Per arm: per-task changes, forgetting, backward transfer, target gain and held-out change."""
  if base not in matrix:
    raise ValueError(f'No {base!r} row in the evaluation matrix; rows: {sorted(matrix)}.')
  primary = {task: primary_metric(task, matrix[base].get(task, {})) for task in suite.all}
  derived = {}
  for arm in sorted(m for m in matrix if m != base):
    change = {task: _score(matrix, arm, task, primary[task]) - _score(matrix, base, task, primary[task])
              for task in suite.all}
    forgetting = {task: -change[task] for task in suite.held_in}
    derived[arm] = {
        'primary_metric': primary,
        'change': change,
        'target_gain': _mean([change[t] for t in suite.target]),
        'forgetting': forgetting,
        'mean_forgetting': _mean(list(forgetting.values())),
        'max_forgetting': max(forgetting.values()) if forgetting else None,
        'backward_transfer': _mean([change[t] for t in suite.held_in]),
        'held_out_change': _mean([change[t] for t in suite.held_out]),
    }
  return derived


def _fmt(value: float | None) -> str:
  return '' if value is None else f'{value:+.2f}'


def report_markdown(matrix: Matrix, derived: Mapping[str, dict], suite: Suite, base: str = 'base',
                    commands: Sequence[str] = (), title: str = 'Does finetuning make the model forget?') -> str:
  arms = list(derived)
  primary = next(iter(derived.values()))['primary_metric'] if derived else {
      task: primary_metric(task, matrix[base][task]) for task in suite.all}
  role = {**{t: 'target' for t in suite.target}, **{t: 'held-in' for t in suite.held_in},
          **{t: 'held-out' for t in suite.held_out}}
  lines = [f'# {title}', '', '## Summary per arm (primary metric points, higher is better)', '',
           '| arm | target gain | backward transfer | mean forgetting | max forgetting | held-out change |',
           '|---|---|---|---|---|---|']
  for arm in arms:
    d = derived[arm]
    lines.append(f"| {arm} | {_fmt(d['target_gain'])} | {_fmt(d['backward_transfer'])} | "
                 f"{_fmt(d['mean_forgetting'])} | {_fmt(d['max_forgetting'])} | {_fmt(d['held_out_change'])} |")
  lines += ['', '## Evaluation matrix', '',
            '| task | role | metric | ' + ' | '.join([base] + arms) + ' |',
            '|---|---|---|' + '---|' * (len(arms) + 1)]
  for task in suite.all:
    metric = primary[task]
    cells = [f'{_score(matrix, base, task, metric):.2f}']
    cells += [f'{_score(matrix, arm, task, metric):.2f} ({derived[arm]["change"][task]:+.2f})' for arm in arms]
    lines.append(f'| {task} | {role[task]} | {metric} | ' + ' | '.join(cells) + ' |')
  lines += ['', '## What the numbers mean', '',
            '- *target gain*: the arm minus the base on the target task(s).',
            '- *forgetting* of a held-in task: the base minus the arm (positive: the skill was lost); '
            '*backward transfer* is the mean change over held-in tasks (negative: forgetting).',
            '- *held-out change*: the mean change on tasks no arm trained on.',
            '- Each cell of the matrix is the arm\'s score and, in brackets, its change against the base.']
  if commands:
    lines += ['', '## Commands', '', '```'] + list(commands) + ['```']
  return '\n'.join(lines) + '\n'


def change_chart(derived: Mapping[str, dict], suite: Suite, path: str) -> None:
  """A PNG: per task, each arm's change against the base (grouped bars)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  arms, tasks = list(derived), list(suite.all)
  width = 0.8 / max(len(arms), 1)
  figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(tasks)), 4))
  for index, arm in enumerate(arms):
    axes.bar([t + index * width for t in range(len(tasks))], [derived[arm]['change'][task] for task in tasks],
             width, label=arm)
  axes.axhline(0, color='black', linewidth=0.8)
  axes.set_xticks([t + width * (len(arms) - 1) / 2 for t in range(len(tasks))])
  axes.set_xticklabels([f'{t}\n({"target" if t in suite.target else "held-out" if t in suite.held_out else "held-in"})'
                        for t in tasks], fontsize=8, rotation=20, ha='right')
  axes.set_ylabel('change vs base (primary metric points)')
  axes.set_title('Change against the base model, per task and arm')
  axes.legend()
  figure.tight_layout()
  _save_figure(figure, path)


def curves_chart(curves: Mapping[str, Sequence[tuple[int, float]]], path: str) -> None:
  """A PNG: training loss per step of each arm (and of the base, where the study trained it)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(6, 4))
  for arm, points in curves.items():
    if points:
      steps, values = zip(*points)
      axes.plot(steps, values, label=arm)
  axes.set_xlabel('step')
  axes.set_ylabel('training loss per token')
  axes.set_title('Training curves')
  axes.legend()
  figure.tight_layout()
  _save_figure(figure, path)


def _save_figure(figure, path: str) -> None:
  tmp = path + '.tmp.png'
  figure.savefig(tmp, dpi=100)
  os.replace(tmp, path)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.close(figure)

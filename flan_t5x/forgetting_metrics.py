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

Every change and derived number gets a paired bootstrap interval (the same resamples of each
task's examples for the arm and the base; derived numbers combine the tasks' resampled changes)
and every per-task change a paired permutation test's p-value (flan_t5x.intervals). Arms with
sanity flags (flan_t5x.sanity: diverged or non-finite loss, zero steps, input-independent
predictions, fewer examples than asked) are left out of the summary and chart unless asked.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

import numpy as np

from flan_t5x import eval_records
from flan_t5x import intervals
from flan_t5x import sanity

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


DERIVED = ('target_gain', 'backward_transfer', 'mean_forgetting', 'max_forgetting', 'held_out_change')


def load_scores(eval_dirs: Mapping[str, str], suite: Suite) -> dict[str, tuple[dict, dict]]:
  """{model: ({task: prediction records}, {task: ExampleScores})} of every evaluated model."""
  return {model: _model_scores(path, suite.all) for model, path in eval_dirs.items()}


def _model_scores(eval_dir: str, tasks: Sequence[str]) -> tuple[dict, dict]:
  """({task: prediction records}, {task: ExampleScores}) of one evaluated model."""
  records, scores = {}, {}
  for task in tasks:
    found = eval_records.read_predictions(eval_dir, task)
    if found is None:
      raise ValueError(f'{eval_dir}: no {task}-predictions.jsonl; the study needs the per-example predictions.')
    records[task] = found
    scores[task] = eval_records.example_scores(found, task)
    if scores[task] is None:
      raise ValueError(f'{task} is not a registered SeqIO task, so its examples cannot be rescored: import the '
                       "module that registers it in the study's gin file (e.g. `import flan_tasks`).")
  return records, scores


def _derived_values(change: Mapping[str, float], suite: Suite) -> dict[str, float | None]:
  forgetting = [-change[t] for t in suite.held_in]
  return {'target_gain': _mean([change[t] for t in suite.target]),
          'backward_transfer': _mean([change[t] for t in suite.held_in]),
          'mean_forgetting': _mean(forgetting),
          'max_forgetting': max(forgetting) if forgetting else None,
          'held_out_change': _mean([change[t] for t in suite.held_out])}


def uncertainty(loaded: Mapping[str, tuple[dict, dict]], suite: Suite, primary: Mapping[str, str],
                cfg: intervals.BootstrapConfig, base: str = 'base', correction: str = 'none') -> dict:
  """Per model and task the score's interval; per arm each change's and each derived number's paired
  interval and permutation p-value (the derived ones from the same swaps, combined over the tasks).
  `correction` ('none', 'holm', 'bh') adjusts the p-values within each family: the arm x task changes,
  and the arm x derived numbers; the unadjusted one is kept as `p_value_unadjusted`.
  `loaded`: load_scores(); every model evaluated on the same examples as the base."""
  base_records, base_scores = loaded[base]
  out = {'bootstrap': cfg.record(), 'num_examples': {t: len(base_records[t]) for t in suite.all},
         'scores': {}, 'arms': {}, 'correction': correction}
  for model, (_, scores) in loaded.items():
    out['scores'][model] = {t: intervals.metric_intervals(scores[t], cfg, key=t)[primary[t]] for t in suite.all}
  for arm in sorted(m for m in loaded if m != base):
    records, scores = loaded[arm]
    change, deltas_TxR, permuted_TxR = {}, {}, {}
    for task in suite.all:
      pairs = [(r['input'], r['target']) for r in records[task]]
      if not intervals.same_examples([(r['input'], r['target']) for r in base_records[task]], pairs):
        raise ValueError(f'{arm}: {task} was evaluated on other examples than the base '
                         f'({len(pairs)} vs {len(base_records[task])}); evaluate both with the same settings.')
      diff, deltas_TxR[task], permuted_TxR[task] = intervals.paired_comparison(
          base_scores[task], scores[task], primary[task], cfg, key=task)
      change[task] = diff.record()
    observed = _derived_values({t: change[t]['delta'] for t in suite.all}, suite)
    resampled = [_derived_values({t: float(deltas_TxR[t][r]) for t in suite.all}, suite) for r in range(cfg.resamples)]
    permuted = [_derived_values({t: float(permuted_TxR[t][r]) for t in suite.all}, suite)
                for r in range(cfg.resamples)]
    derived = {}
    for name in DERIVED:
      values_R = np.asarray([v[name] for v in resampled if v[name] is not None])
      if values_R.size:
        low, high = intervals.percentile_interval(values_R, cfg.confidence)
        p_value = intervals.permutation_p_value(observed[name], np.asarray([v[name] for v in permuted]))
        derived[name] = {'low': low, 'high': high, 'spans_zero': low <= 0 <= high, 'p_value': p_value}
    out['arms'][arm] = {'change': change, 'derived': derived}
  for family in ('change', 'derived'):
    found = [entry for arm in out['arms'].values() for entry in arm[family].values()]
    for entry, adjusted in zip(found, intervals.adjust_p_values([e['p_value'] for e in found], correction)):
      entry['p_value_unadjusted'], entry['p_value'] = entry['p_value'], adjusted
  return out


def differences(loaded: Mapping[str, tuple[dict, dict]], suite: Suite, primary: Mapping[str, str],
                arms: Sequence[str], base: str = 'base', count: int = 3) -> list[eval_records.Differences]:
  """Per arm and task, the `count` examples where the arm and the base differ most on the primary metric."""
  base_records, base_scores = loaded[base]
  return [eval_records.Differences(base, arm, task, primary[task], base_records[task], loaded[arm][0][task],
                                   base_scores[task].per_example(primary[task]),
                                   loaded[arm][1][task].per_example(primary[task]), count)
          for arm in arms for task in suite.all]


def model_flags(eval_dir: str, suite: Suite, curve: Sequence[tuple[int, float]] | None = None,
                start_step: int | None = None) -> dict:
  """{'flags': [...], 'task_flags': {task: [...]}, 'exclude': bool} of one model (its eval and, if trained, its
  training curve). Excluded: any training flag, fewer examples than asked, or input-independent
  predictions on a target task or on most of the suite's tasks."""
  summary = eval_records.read_results(eval_dir)['tasks']
  task_flags = {t: eval_records.task_flags(summary[t], eval_records.read_predictions(eval_dir, t))
                for t in suite.all if t in summary}
  flags = sanity.history_flags(curve, start_step) if curve is not None else []
  names = {t: {f['flag'] for f in found} for t, found in task_flags.items()}
  constant = [t for t, found in names.items() if sanity.INPUT_INDEPENDENT in found]
  if constant and (set(constant) & set(suite.target) or 2 * len(constant) > len(suite.all)):
    flags.append({'flag': sanity.INPUT_INDEPENDENT, 'detail': f'on {", ".join(constant)}'})
  short = [t for t, found in names.items() if sanity.FEWER_EXAMPLES in found]
  if short:
    flags.append({'flag': sanity.FEWER_EXAMPLES, 'detail': f'on {", ".join(short)}'})
  return {'flags': flags, 'task_flags': {t: f for t, f in task_flags.items() if f}, 'exclude': bool(flags)}


def _fmt(value: float | None) -> str:
  return '' if value is None else intervals.format_number(value, True)


def _with_interval(value: float | None, found: Mapping | None,
                   cfg: intervals.BootstrapConfig = intervals.BootstrapConfig()) -> str:
  """'+6.42 [+3.10, +9.80] p=0.004', bold where intervals.significant (the one rule) holds."""
  if value is None:
    return ''
  if not found:
    return _fmt(value)
  significant = 'p_value' in found and intervals.significant(found, cfg)
  text = f'**{_fmt(value)}**' if significant else _fmt(value)
  text = f"{text} [{_fmt(found['low'])}, {_fmt(found['high'])}]"
  return f"{text} p={found['p_value']:.3f}" if 'p_value' in found else text


def bootstrap_config(found: Mapping | None) -> intervals.BootstrapConfig:
  """The BootstrapConfig an uncertainty() record was made with (the default without one)."""
  settings = (found or {}).get('bootstrap')
  if not settings:
    return intervals.BootstrapConfig()
  return intervals.BootstrapConfig(settings['resamples'], settings['seed'], settings['confidence'])


def shown_arms(derived: Mapping[str, dict], flags: Mapping[str, dict] | None, include_flagged: bool) -> list[str]:
  return [arm for arm in derived if include_flagged or not (flags or {}).get(arm, {}).get('exclude')]


def report_markdown(matrix: Matrix, derived: Mapping[str, dict], suite: Suite, base: str = 'base',
                    commands: Sequence[str] = (), title: str = 'Does finetuning make the model forget?',
                    uncertainty: Mapping | None = None, flags: Mapping[str, dict] | None = None,
                    include_flagged: bool = False, learning_rates: Mapping[str, float | None] | None = None,
                    sections: Sequence[str] = ()) -> str:
  arms = list(derived)
  shown = shown_arms(derived, flags, include_flagged)
  primary = next(iter(derived.values()))['primary_metric'] if derived else {
      task: primary_metric(task, matrix[base][task]) for task in suite.all}
  role = {**{t: 'target' for t in suite.target}, **{t: 'held-in' for t in suite.held_in},
          **{t: 'held-out' for t in suite.held_out}}
  arm_intervals = (uncertainty or {}).get('arms', {})
  cfg = bootstrap_config(uncertainty)
  lines = [f'# {title}', '', '## Summary per arm (primary metric points; target gain, backward transfer and '
           'held-out change: higher is better; mean and max forgetting: lower is better)', '',
           '| arm | target gain | backward transfer | mean forgetting | max forgetting | held-out change |',
           '|---|---|---|---|---|---|']
  for arm in shown:
    d, found = derived[arm], arm_intervals.get(arm, {}).get('derived', {})
    mark = ' (flagged)' if (flags or {}).get(arm, {}).get('exclude') else ''
    lines.append(f'| {arm}{mark} | ' + ' | '.join(_with_interval(d[n], found.get(n), cfg) for n in DERIVED) + ' |')
  left_out = [arm for arm in arms if arm not in shown]
  if left_out:
    lines += ['', 'Left out of the summary and the chart (sanity flags below; `include_flagged=True` shows them): '
              + ', '.join(left_out) + '.']
  flag_lines = [f"- {model}: **{f['flag']}**: {f['detail']}" for model, found in (flags or {}).items()
                for f in found['flags']]
  flag_lines += [f"- {model}, {task}: {f['flag']}: {f['detail']}" for model, found in (flags or {}).items()
                 for task, task_flags in found['task_flags'].items() for f in task_flags]
  if flag_lines:
    lines += ['', '## Sanity flags', ''] + flag_lines
  counts = (uncertainty or {}).get('num_examples', {})
  scores = (uncertainty or {}).get('scores', {})
  lines += ['', '## Evaluation matrix', '',
            '| task | role | metric | examples | ' + ' | '.join([base] + arms) + ' |',
            '|---|---|---|---|' + '---|' * (len(arms) + 1)]
  for task in suite.all:
    metric = primary[task]
    def score(model):
      found = scores.get(model, {}).get(task)
      value = _score(matrix, model, task, metric)
      return intervals.format_interval(value, found['low'], found['high']) if found else f'{value:.2f}'
    cells = [score(base)]
    for arm in arms:
      change = arm_intervals.get(arm, {}).get('change', {}).get(task)
      delta = _with_interval(change['delta'], change, cfg) if change else _fmt(derived[arm]['change'][task])
      cells.append(f'{score(arm)} ({delta})')
    lines.append(f'| {task} | {role[task]} | {metric} | {counts.get(task, "")} | ' + ' | '.join(cells) + ' |')
  if learning_rates:
    lines += ['', '## Learning rate per arm', '', '| arm | learning rate |', '|---|---|']
    lines += [f"| {arm} | {rate if rate is not None else 'as the training gin files set'} |"
              for arm, rate in learning_rates.items()]
  for section in sections:
    lines += [''] + section.rstrip('\n').split('\n')
  lines += ['', '## What the numbers mean', '',
            '- *target gain*: the arm minus the base on the target task(s).',
            '- *forgetting* of a held-in task: the base minus the arm (positive: the skill was lost); '
            '*backward transfer* is the mean change over held-in tasks (negative: forgetting).',
            '- *held-out change*: the mean change on tasks no arm trained on.',
            '- Each cell of the matrix is the model\'s score and, in brackets, its change against the base.']
  if uncertainty:
    settings = uncertainty['bootstrap']
    alpha = 1 - settings['confidence']
    tests = sum(len(a['change']) + len(a['derived']) for a in uncertainty['arms'].values())
    correction = uncertainty.get('correction', 'none')
    lines += [f"- Square brackets: {settings['confidence']:.0%} paired bootstrap intervals ({settings['resamples']} "
              f"resamples of each task's examples, seed {settings['seed']}; the arm and the base resampled alike); "
              f'p: paired permutation test (the summary numbers from the same swaps, combined over the tasks). '
              f'**bold** (one rule, intervals.significant): the interval excludes 0 and p < {alpha:.2f} '
              '(percentile intervals run narrow on a few dozen examples; the test does not).',
              f'- Multiple comparisons: {tests} tests in this table; ' + (
                  f'p-values are adjusted within each family (arm x task, arm x summary number) with '
                  f"{'Holm' if correction == 'holm' else 'Benjamini-Hochberg'}'s method." if correction != 'none' else
                  f'p-values are not adjusted, so among true-null comparisons about {alpha:.0%} are bold by chance; '
                  "forgetting.run_study.correction = 'holm' (family-wise) or 'bh' (false discovery rate) "
                  'adjusts them.')]
  if commands:
    lines += ['', '## Commands', '', '```'] + list(commands) + ['```']
  return '\n'.join(lines) + '\n'


def versus_markdown(reference: str, derived: Mapping[str, dict], found: Mapping, suite: Suite,
                    arms: Sequence[str]) -> str:
  """A section: each arm against the reference arm (derive() and uncertainty() with the reference as base)."""
  lines = [f'## Against {reference} (each arm minus {reference}; paired intervals, permutation p-values)', '',
           '| arm | ' + ' | '.join(suite.all) + ' | target gain | backward transfer | held-out change |',
           '|---|' + '---|' * (len(suite.all) + 3)]
  cfg = bootstrap_config(found)
  for arm in arms:
    if arm == reference or arm not in derived:
      continue
    change, arm_found = derived[arm]['change'], found.get('arms', {}).get(arm, {})
    if arm_found:
      cells = [_with_interval(arm_found['change'][t]['delta'], arm_found['change'][t], cfg) for t in suite.all]
    else:
      cells = [_fmt(change[t]) for t in suite.all]
    cells += [_with_interval(derived[arm][n], arm_found.get('derived', {}).get(n), cfg)
              for n in ('target_gain', 'backward_transfer', 'held_out_change')]
    lines.append(f'| {arm} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def arm_colours(models: Sequence[str]) -> dict[str, tuple]:
  """One colour per model, the same in every chart of a study (models in sorted order, base first)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  palette = matplotlib.colormaps['tab10']
  ordered = sorted(models, key=lambda m: (m != 'base', m))
  return {model: palette(index % 10) for index, model in enumerate(ordered)}


def change_chart(derived: Mapping[str, dict], suite: Suite, path: str, uncertainty: Mapping | None = None,
                 colours: Mapping[str, tuple] | None = None) -> None:
  """A PNG, one panel per task (each its own primary metric): each arm's change against the base with its
  paired bootstrap interval."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  arms, tasks = list(derived), list(suite.all)
  colours = colours or arm_colours(arms)
  columns = min(3, len(tasks))
  rows = -(-len(tasks) // columns)
  figure, axes_grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
  for axes in axes_grid.flat[len(tasks):]:
    axes.set_visible(False)
  for axes, task in zip(axes_grid.flat, tasks):
    metric = next(iter(derived.values()))['primary_metric'][task] if derived else ''
    for index, arm in enumerate(arms):
      value = derived[arm]['change'][task]
      found = (uncertainty or {}).get('arms', {}).get(arm, {}).get('change', {}).get(task)
      error = [[value - found['low']], [found['high'] - value]] if found else None
      axes.bar(index, value, 0.7, yerr=error, capsize=3, color=colours[arm], label=arm)
    axes.axhline(0, color='black', linewidth=0.8)
    axes.set_xticks(range(len(arms)), arms, fontsize=7, rotation=25, ha='right')
    role = 'target' if task in suite.target else 'held-out' if task in suite.held_out else 'held-in'
    axes.set_title(f'{task} ({role})', fontsize=9)
    axes.set_ylabel(f'{metric} change vs base', fontsize=8)
  note = ' (95% paired bootstrap intervals)' if uncertainty else ''
  figure.suptitle(f'Change against the base model per task{note}')
  figure.tight_layout()
  _save_figure(figure, path)


def curves_chart(curves: Mapping[str, Sequence[tuple[int, float]]], path: str,
                 colours: Mapping[str, tuple] | None = None) -> None:
  """A PNG: training loss per step of each arm (and of the base, where the study trained it)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  colours = colours or arm_colours(list(curves))
  figure, axes = plt.subplots(figsize=(6, 4))
  for arm, points in curves.items():
    if points:
      steps, values = zip(*points)
      axes.plot(steps, values, label=arm, color=colours.get(arm))
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

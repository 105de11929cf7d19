r"""Compares eval runs: per task and template, each run's metrics with intervals, differences vs the first.

  python -m flan_t5x.compare runs/a/eval runs/b/eval [--png chart.png] [--examples runs/diff]

Each RUN is an EVAL_OUTPUT_DIR of `flan_t5x.eval` (results.json and <task>-predictions.jsonl).
Every value gets a bootstrap confidence interval over its examples, with the example count; a
later run's difference from the first gets a paired bootstrap interval and a paired permutation
test's p-value when both scored the same examples (flan_t5x.intervals; --resamples, --seed).
Sanity flags (input-independent predictions, fewer examples than asked) are listed. `--png`
draws one panel per metric with error bars; `--examples PREFIX` writes the examples where the
runs differ most side by side (PREFIX.md, PREFIX.html).

Results are never mixed across checkpoints: a RUN whose results.json and <task>.json files
record different checkpoint fingerprints (results of several eval runs in one directory) is
refused; `--expect RUN=CHECKPOINT_PATH` (RUN as given or its directory name) refuses unless
RUN's results come from that checkpoint as it is now; two RUNs from the same checkpoint get a
warning (e.g. "base" and "finetuned" evaluated from one checkpoint by mistake).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Mapping, Sequence

from flan_t5x import eval_records
from flan_t5x import forgetting_metrics
from flan_t5x import intervals

GROUPS = (('metrics', ''), ('rank_classification', 'rank '))


_read_results = eval_records.read_results


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


def _recorded_intervals(result: dict) -> dict[str, dict]:
  return {f'{prefix}{name}': found for group, prefix in GROUPS
          for name, found in result.get('intervals', {}).get(group, {}).items()}


@dataclasses.dataclass
class Run:
  """One eval directory: its label, per-task results and, where rescorable, per-example scores."""
  path: str
  label: str
  tasks: dict
  records: dict = dataclasses.field(default_factory=dict)  # task -> prediction records
  scores: dict = dataclasses.field(default_factory=dict)  # task -> intervals.ExampleScores
  pairs: dict = dataclasses.field(default_factory=dict)  # (first run's path, task) -> _paired(), made once


def _labels(run_dirs: Sequence[str], summaries: Sequence[dict]) -> list[str]:
  names = [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
  if len(set(names)) < len(names):
    names = list(run_dirs)
  return [f"{name} (step {summary.get('step')})" if summary.get('step') is not None else name
          for name, summary in zip(names, summaries)]


def load_runs(run_dirs: Sequence[str]) -> tuple[list[Run], list[str]]:
  """The runs with their per-example scores; warnings for tasks that cannot be rescored."""
  summaries = [eval_records.read_results(d) for d in run_dirs]
  runs, warnings = [], []
  for path, label, summary in zip(run_dirs, _labels(run_dirs, summaries), summaries):
    run_checkpoint(path)
    run = Run(path, label, summary['tasks'])
    for task in run.tasks:
      records = eval_records.read_predictions(path, task)
      if records is None:
        warnings.append(f'{path}: no {task}-predictions.jsonl; {task} has no intervals there.')
        continue
      run.records[task] = records
      scores = eval_records.example_scores(records, task)
      if scores is None:
        warnings.append(f'{task} is not a registered SeqIO task here (pass --module for your tasks); '
                        'its rows show recorded values only.')
      else:
        run.scores[task] = scores
    runs.append(run)
  return runs, list(dict.fromkeys(warnings))


def task_overlap_warnings(runs: Sequence[Run]) -> list[str]:
  warnings = []
  for i, a in enumerate(runs):
    for b in runs[i + 1:]:
      if not set(a.tasks) & set(b.tasks):
        warnings.append(f'{a.path} and {b.path} share no task ({a.path}: {sorted(a.tasks)}; {b.path}: '
                        f'{sorted(b.tasks)}); nothing of theirs can be compared.')
  return warnings


def _same_examples(a: Run, b: Run, task: str) -> bool:
  ra, rb = a.records.get(task), b.records.get(task)
  return (ra is not None and rb is not None and
          intervals.same_examples([_example_key(r) for r in ra], [_example_key(r) for r in rb]))


def _example_key(record: dict) -> tuple:
  return (record['input'], record['target'])


def shared_records(a_records: Sequence[dict], b_records: Sequence[dict]) -> tuple[list[dict], list[dict]]:
  """The examples both runs evaluated (same input and target), in `a`'s order, paired up; an example
  evaluated twice pairs with the other run's occurrences in turn."""
  waiting: dict[tuple, list[dict]] = {}
  for record in b_records:
    waiting.setdefault(_example_key(record), []).append(record)
  a_shared, b_shared = [], []
  for record in a_records:
    partners = waiting.get(_example_key(record))
    if partners:
      a_shared.append(record)
      b_shared.append(partners.pop(0))
  return a_shared, b_shared


@dataclasses.dataclass(frozen=True)
class _Pair:
  """Two runs' scores on the examples they share, for paired differences."""
  a_scores: intervals.ExampleScores
  b_scores: intervals.ExampleScores
  a_records: list
  b_records: list
  subset: bool  # False: both evaluated exactly the same examples


def _paired(base: Run, run: Run, task: str) -> _Pair | None:
  """`run` and `base` on the examples of `task` both evaluated (None: nothing to pair); rescored once
  per pair of runs, since every table cell and chart panel asks again."""
  key = (base.path, task)
  if key not in run.pairs:
    run.pairs[key] = _pair_up(base, run, task)
  return run.pairs[key]


def _pair_up(base: Run, run: Run, task: str) -> _Pair | None:
  if base.scores.get(task) is None or run.scores.get(task) is None:
    return None
  if _same_examples(base, run, task):
    return _Pair(base.scores[task], run.scores[task], base.records[task], run.records[task], False)
  a_shared, b_shared = shared_records(base.records[task], run.records[task])
  if not a_shared:
    return None
  a_scores, b_scores = eval_records.example_scores(a_shared, task), eval_records.example_scores(b_shared, task)
  return _Pair(a_scores, b_scores, a_shared, b_shared, True)


def example_set_warnings(runs: Sequence[Run]) -> list[str]:
  """Each later run whose examples of a task differ from the first run's: compared on the shared ones."""
  warnings = []
  base = runs[0] if runs else None
  for run in runs[1:]:
    for task in run.tasks:
      if task not in base.records or task not in run.records or _same_examples(base, run, task):
        continue
      shared, _ = shared_records(base.records[task], run.records[task])
      warnings.append(f'{task}: {base.path} evaluated {len(base.records[task])} examples and {run.path} '
                      f'{len(run.records[task])}, not the same ones; their differences are computed on the '
                      f'{len(shared)} examples both evaluated (same input and target).')
  return warnings


def _run_cells(run: Run, task: str, template: str | None, names: Sequence[str],
               cfg: intervals.BootstrapConfig) -> tuple[str, dict[str, str]]:
  """(examples, {metric: 'value [low, high]'}) of one run on a task or one of its templates."""
  result = run.tasks.get(task)
  if result is None:
    return '-', {}
  if template is not None:
    result = result.get('by_template', {}).get(template)
    if result is None:
      return '-', {}
  values, recorded = _metric_values(result), _recorded_intervals(result)
  scores = run.scores.get(task)
  rows = None if template is None or scores is None else eval_records.template_rows(run.records[task]).get(template)
  fresh = {}
  if scores is not None and (template is None or rows):
    fresh = intervals.metric_intervals(scores, cfg, rows, key=task if template is None else f'{task}/{template}')
  cells = {}
  for name in names:
    if name not in values:
      continue
    found = fresh.get(name) or recorded.get(name)
    cells[name] = (intervals.format_interval(values[name], found['low'], found['high']) if found
                   else intervals.format_number(values[name]))
  return str(result.get('num_examples', '-')), cells


def _delta_cell(base: Run, run: Run, task: str, template: str | None, name: str,
                cfg: intervals.BootstrapConfig) -> str:
  a_values = _metric_values(_part(base, task, template))
  b_values = _metric_values(_part(run, task, template))
  if name not in a_values or name not in b_values:
    return ''
  pair = _paired(base, run, task)
  if pair is None or name not in pair.a_scores.metrics:
    return f'{intervals.format_number(b_values[name] - a_values[name], True)} (no paired interval)'
  rows = None if template is None else eval_records.template_rows(pair.a_records).get(template)
  if template is not None and not rows:
    return '(no shared examples)'
  key = task if template is None else f'{task}/{template}'
  diff = intervals.paired_difference(pair.a_scores, pair.b_scores, name, cfg, rows, key)
  delta = intervals.format_number(diff.delta, True)
  delta = f'**{delta}**' if intervals.significant(diff, cfg) else delta
  return (f'{delta} [{intervals.format_number(diff.low, True)}, {intervals.format_number(diff.high, True)}] '
          f'p={diff.p_value:.3f}' + (f' on {diff.num_examples} shared' if pair.subset else ''))


def _part(run: Run, task: str, template: str | None) -> dict:
  result = run.tasks.get(task, {})
  return result if template is None else result.get('by_template', {}).get(template, {})


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows])


def _task_section(runs: Sequence[Run], task: str, cfg: intervals.BootstrapConfig) -> str:
  present = [run.tasks[task] for run in runs if task in run.tasks]
  names = list(dict.fromkeys(n for r in present for n in _metric_values(r)))
  templates = sorted(dict.fromkeys(t for r in present for t in r.get('by_template', {})), key=int)
  header = ['template', 'run', 'examples'] + names
  rows = []
  for template in [None] + templates:
    for index, run in enumerate(runs):
      examples, cells = _run_cells(run, task, template, names, cfg)
      row = ['all' if template is None else template, run.label, examples]
      for name in names:
        cell = cells.get(name, '-')
        if index and cell != '-' and task in runs[0].tasks:
          delta = _delta_cell(runs[0], run, task, template, name, cfg)
          cell = f'{cell}; {delta}' if delta else cell
        row.append(cell)
      rows.append(row)
  return f'### {task}\n\n' + _table(header, rows)


def _flag_lines(runs: Sequence[Run]) -> list[str]:
  lines = []
  for run in runs:
    for task, result in run.tasks.items():
      for flag in eval_records.task_flags(result, run.records.get(task)):
        lines.append(f"- {run.label}, {task}: **{flag['flag']}**: {flag['detail']}")
  return lines


def compare(run_dirs: Sequence[str], expect: Mapping[str, str] | None = None,
            cfg: intervals.BootstrapConfig | None = None) -> str:
  """Markdown: per task, rows = overall and each template x run, columns = examples and metrics.

  Each value has its bootstrap interval; each later run's value also its paired difference from
  the first run (interval, permutation p-value; bold where the interval excludes 0).
  ValueError if a run mixes checkpoints or is not from its `expect`ed one (check_checkpoints);
  runs from the same checkpoint, or sharing no task, are warned about on stderr and in the output.
  """
  cfg = cfg or intervals.BootstrapConfig()
  warnings = check_checkpoints(run_dirs, expect)
  runs, rescoring = load_runs(run_dirs)
  warnings += task_overlap_warnings(runs) + example_set_warnings(runs) + rescoring
  for warning in warnings:
    print(f'warning: {warning}', file=sys.stderr)
  tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
  parts = [f'> warning: {w}' for w in warnings]
  parts += [_task_section(runs, task, cfg) for task in tasks]
  flags = _flag_lines(runs)
  if flags:
    parts.append('### Sanity flags\n\n' + '\n'.join(flags))
  parts.append(f'Values: metric [{cfg.confidence:.0%} bootstrap interval over the examples]; later runs also: '
               f'difference from {runs[0].label} [paired bootstrap interval] and p-value of a paired permutation '
               f'test; bold: the interval excludes 0 and p < {1 - cfg.confidence:.2f}. '
               f'{cfg.resamples} resamples, seed {cfg.seed}. '
               '"-": not evaluated. Rank metrics score the likeliest answer option (rank classification).')
  return '\n\n'.join(parts) + '\n'


def paired_task_differences(base: Run, run: Run, name: str, cfg: intervals.BootstrapConfig
                            ) -> dict[str, intervals.PairedDifference]:
  """{task: run - base on the examples both evaluated} for every task where `name` can be paired."""
  out = {}
  for task in run.tasks:
    pair = _paired(base, run, task)
    if pair is not None and name in pair.a_scores.metrics and name in pair.b_scores.metrics:
      out[task] = intervals.paired_difference(pair.a_scores, pair.b_scores, name, cfg, key=task)
  return out


def bar_chart(run_dirs: Sequence[str], path: str, cfg: intervals.BootstrapConfig | None = None) -> None:
  """A PNG, one row per metric: each task's value per run with bootstrap error bars ('n/a' where missing)
  and, with several runs, each later run's paired difference from the first with its interval
  ('*': significant by intervals.significant). Titles say which direction is better."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit('--png needs matplotlib, which is not installed: pip install matplotlib') from None
  cfg = cfg or intervals.BootstrapConfig()
  runs, _ = load_runs(run_dirs)
  tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
  names = list(dict.fromkeys(n for run in runs for t in run.tasks for n in _metric_values(run.tasks[t])))
  colours = plt.get_cmap('tab10')
  columns = 2 if len(runs) > 1 else 1
  figure, axes_grid = plt.subplots(len(names), columns, figsize=(max(6, 1.6 * len(tasks)) * columns,
                                                                 3 * len(names) + 0.6),
                                   squeeze=False, layout='constrained')
  width = 0.8 / len(runs)
  for row, name in enumerate(names):
    axes = axes_grid[row, 0]
    shown = [t for t in tasks if any(name in _metric_values(run.tasks.get(t, {})) for run in runs)]
    for index, run in enumerate(runs):
      xs, heights, errors = [], [], [[], []]
      for position, task in enumerate(shown):
        x = position + index * width
        value = _metric_values(run.tasks.get(task, {})).get(name)
        if value is None:
          axes.text(x, 0, 'n/a', ha='center', va='bottom', fontsize=7, rotation=90, color=colours(index % 10))
          continue
        found = _point_interval(run, task, name, cfg)
        if value == 0:  # a zero bar is invisible: say it, so it is not read as missing
          axes.text(x, 0, '0', ha='center', va='bottom', fontsize=7, color=colours(index % 10))
        xs.append(x)
        heights.append(value)
        errors[0].append(value - found[0] if found else 0.0)
        errors[1].append(found[1] - value if found else 0.0)
      axes.bar(xs, heights, width, yerr=errors, capsize=2, color=colours(index % 10), label=run.label)
    axes.set_xticks([p + width * (len(runs) - 1) / 2 for p in range(len(shown))], shown, fontsize=8)
    axes.set_title(f'{name} per run ({intervals.direction(name)})', fontsize=10)
    axes.set_ylabel(name)
    axes.legend(fontsize=7)
    if columns == 2:
      _difference_panel(axes_grid[row, 1], runs, shown, name, cfg, colours)
  figure.suptitle(f'Metrics per task and run; right: difference from {runs[0].label} on the examples both '
                  f'evaluated ({cfg.confidence:.0%} intervals; * significant)', fontsize=10)
  figure.savefig(path)
  plt.close(figure)


def _difference_panel(axes, runs, shown, name, cfg, colours) -> None:
  later = runs[1:]
  width = 0.8 / len(later)
  for index, run in enumerate(later):
    diffs = paired_task_differences(runs[0], run, name, cfg)
    labelled = False
    for position, task in enumerate(shown):
      x = position + index * width
      diff = diffs.get(task)
      if diff is None:
        axes.text(x, 0, 'n/a', ha='center', va='bottom', fontsize=7, rotation=90, color=colours((index + 1) % 10))
        continue
      axes.bar([x], [diff.delta], width, yerr=[[diff.delta - diff.low], [diff.high - diff.delta]], capsize=2,
               color=colours((index + 1) % 10), label=None if labelled else run.label)
      labelled = True
      if intervals.significant(diff, cfg):
        axes.text(x, diff.high, '*', ha='center', va='bottom', fontsize=11)
  axes.axhline(0, color='black', linewidth=0.8)
  axes.set_xticks([p + width * (len(later) - 1) / 2 for p in range(len(shown))], shown, fontsize=8)
  better = 'below 0 is better' if intervals.direction(name) == 'lower is better' else 'above 0 is better'
  axes.set_title(f'{name}: difference from {runs[0].label} ({better})', fontsize=10)
  axes.set_ylabel(f'{name} difference')
  if axes.get_legend_handles_labels()[0]:  # nothing to label where no task could be paired
    axes.legend(fontsize=7)


def _point_interval(run: Run, task: str, name: str, cfg: intervals.BootstrapConfig) -> tuple[float, float] | None:
  scores = run.scores.get(task)
  if scores is not None and name in scores.metrics:
    found = intervals.metric_intervals(scores, cfg, key=task)[name]
    return found['low'], found['high']
  found = _recorded_intervals(run.tasks.get(task, {})).get(name)
  return (found['low'], found['high']) if found else None


def side_by_side(run_dirs: Sequence[str], path_prefix: str, per_task: int = 5) -> list[str]:
  """Writes <prefix>.md and <prefix>.html: per later run and task, the examples where it differs most from run 1."""
  runs, _ = load_runs(run_dirs)
  sections = []
  for run in runs[1:]:
    for task in runs[0].tasks:
      pair = _paired(runs[0], run, task)
      if pair is None:
        continue
      metric = forgetting_metrics.primary_metric(task, pair.a_scores.metrics)
      a_N, b_N = pair.a_scores.per_example(metric), pair.b_scores.per_example(metric)
      sections.append(eval_records.Differences(runs[0].label, run.label, task, metric, pair.a_records,
                                               pair.b_records, a_N, b_N, per_task))
  return eval_records.write_differences(sections, path_prefix)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('runs', nargs='+', help='EVAL_OUTPUT_DIRs of flan_t5x.eval; the first is the baseline')
  parser.add_argument('--png', help='also write a chart here: one panel per metric, bootstrap error bars')
  parser.add_argument('--examples', metavar='PREFIX',
                      help='also write PREFIX.md and PREFIX.html: the examples where each run differs most from '
                           'the first, side by side')
  parser.add_argument('--per_task', type=int, default=5, help='examples per task and run for --examples')
  parser.add_argument('--resamples', type=int, default=1000, help='bootstrap / permutation resamples')
  parser.add_argument('--seed', type=int, default=0, help='seed of the resamples')
  parser.add_argument('--module', action='append', default=[],
                      help='a module to import that registers your SeqIO tasks (to rescore them); repeatable')
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
    cfg = intervals.BootstrapConfig(args.resamples, args.seed)
    _import_tasks(args.module)
    print(compare(args.runs, expect, cfg))
    if args.png:
      bar_chart(args.runs, args.png, cfg)
      print(f'wrote {args.png}')
    if args.examples:
      print('wrote ' + ', '.join(side_by_side(args.runs, args.examples, args.per_task)))
  except (ValueError, FileNotFoundError) as err:
    print(f'error: {err}', file=sys.stderr)
    return 2
  return 0


def _import_tasks(modules: Sequence[str]) -> None:
  """flan_tasks (if installed) and the user's task modules, so that their tasks can be rescored."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    importlib.import_module('flan_tasks')
  except ImportError:
    pass
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as err:
      raise ValueError(f'--module {module}: cannot import it ({err}).') from None


if __name__ == '__main__':
  sys.exit(main())

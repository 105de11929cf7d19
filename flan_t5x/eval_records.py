"""Reading a flan_t5x.eval output directory back: results, per-example predictions, their scores.

Paired comparisons (flan_t5x.compare, the forgetting study) rescore each example from
<task>-predictions.jsonl with the task's own metric functions (SeqIO's registry), so every
resample recomputes the metric as the evaluation did. A task that is not registered (a user
task whose module was not imported) has no per-example scores: readers say so and show the
point estimates only.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from typing import Any, Sequence

import numpy as np

from flan_t5x import checkpoints

from flan_t5x import intervals
from flan_t5x import sanity


def read_results(path: str) -> dict:
  results_path = os.path.join(path, 'results.json')
  if not os.path.exists(results_path):
    raise ValueError(f'{path}: no results.json; expected an EVAL_OUTPUT_DIR written by flan_t5x.eval.')
  with open(results_path) as f:
    return json.load(f)


def read_predictions(path: str, task: str) -> list[dict] | None:
  """The records of <task>-predictions.jsonl in example order (None if the file is missing)."""
  predictions_path = os.path.join(path, f'{task}-predictions.jsonl')
  if not os.path.exists(predictions_path):
    return None
  records = []
  with open(predictions_path) as f:
    for number, line in enumerate(f, 1):
      try:
        record = json.loads(line)
      except json.JSONDecodeError as err:
        raise ValueError(f'{predictions_path}, line {number}: not JSON ({err}).') from None
      if not isinstance(record, dict) or not {'input', 'target', 'prediction'} <= set(record):
        raise ValueError(f'{predictions_path}, line {number}: expected an object with "input", "target" and '
                         f'"prediction", got {str(record)[:100]}.')
      records.append(record)
  return records


def _task(name: str):
  import seqio  # pylint: disable=g-import-not-at-top  (TensorFlow: only when rescoring)
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    return None


def example_scores(records: Sequence[dict], task_name: str) -> intervals.ExampleScores | None:
  """Each record rescored with `task_name`'s metrics (None: the task is not registered)."""
  task = _task(task_name)
  if task is None:
    return None
  def scored(record: dict, is_target: bool) -> Any:
    key = 'scored_target' if is_target else 'scored_prediction'
    if key in record:
      return record[key]
    return task.postprocess_fn(record['target' if is_target else 'prediction'], example={}, is_target=is_target)
  return intervals.ExampleScores(task.predict_metric_fns, [scored(r, True) for r in records],
                                 [scored(r, False) for r in records])


def task_flags(result: dict, records: Sequence[dict] | None) -> list[dict]:
  """The sanity flags eval recorded for a task, or computed now from its predictions (older outputs)."""
  if 'flags' in result:
    return list(result['flags'])
  if records is None:
    return []
  return sanity.prediction_flags([r['prediction'] for r in records], [r['target'] for r in records],
                                 result.get('requested_examples'))


def template_rows(records: Sequence[dict]) -> dict[str, list[int]]:
  """{template index as results.json writes it: example rows}."""
  rows: dict[str, list[int]] = {}
  for index, record in enumerate(records):
    rows.setdefault(str(record.get('template_idx', -1)), []).append(index)
  return rows


@dataclasses.dataclass(frozen=True)
class Differences:
  """Two runs' outputs on one task's examples and per-example scores of `metric`: the largest gaps first."""
  a_label: str
  b_label: str
  task: str
  metric: str
  a_records: Sequence[dict]
  b_records: Sequence[dict]
  a_scores_N: np.ndarray
  b_scores_N: np.ndarray
  count: int = 5

  def rows(self) -> list[tuple[int, dict, dict, float, float]]:
    order = sorted(range(len(self.a_records)),
                   key=lambda i: (-abs(float(self.b_scores_N[i]) - float(self.a_scores_N[i])), i))[:self.count]
    return [(i, self.a_records[i], self.b_records[i], float(self.a_scores_N[i]), float(self.b_scores_N[i]))
            for i in order]


def write_differences(sections: Sequence[Differences], path_prefix: str) -> list[str]:
  """<prefix>.md and <prefix>.html: per section, its examples side by side (input, target, both outputs)."""
  written = [path_prefix + '.md', path_prefix + '.html']
  checkpoints.write_text_atomically(written[0], _differences_markdown(sections))
  checkpoints.write_text_atomically(written[1], _differences_html(sections))
  return written


def _md_text(text: str) -> str:
  return ' '.join(str(text).split()).replace('|', '\\|')


def _differences_markdown(sections: Sequence[Differences]) -> str:
  lines = ['# Where the runs differ most', '']
  for section in sections:
    a_label, b_label, task, metric, rows = (section.a_label, section.b_label, section.task, section.metric,
                                            section.rows())
    lines += [f'## {task}: {b_label} vs {a_label} (per-example {metric})', '',
              f'| example | input | target | {a_label} | {b_label} |', '|---|---|---|---|---|']
    for index, a, b, a_score, b_score in rows:
      lines.append(f"| {index} | {_md_text(a['input'])} | {_md_text(a['target'])} | "
                   f"{_md_text(a['prediction'])} ({a_score:.1f}) | {_md_text(b['prediction'])} ({b_score:.1f}) |")
    lines.append('')
  if not sections:
    lines.append('No task with the same examples in the first run and another run.')
  return '\n'.join(lines) + '\n'


_DIFFERENCES_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
label{font-weight:600;margin-right:.5em}select{font-size:1em;padding:.2em}
table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:.92em}
th{background:#f3f4f6;text-align:left;position:sticky;top:0}
td,th{vertical-align:top;white-space:pre-wrap;word-wrap:break-word;border:1px solid #d0d7de;padding:6px}
tr:nth-child(even) td{background:#fafbfc}td.score{white-space:nowrap}
.better{color:#116329;font-weight:600}.worse{color:#a40e26;font-weight:600}
"""
# Shows only the chosen task's sections; without JavaScript every section stays visible.
_DIFFERENCES_FILTER = """
<script>
function showTask(task){document.querySelectorAll('section[data-task]').forEach(function(s){
  s.style.display=(task===''||s.dataset.task===task)?'':'none';});}
</script>
"""


def _differences_html(sections: Sequence[Differences]) -> str:
  escape = html.escape
  tasks = list(dict.fromkeys(section.task for section in sections))
  parts = ['<!DOCTYPE html><html><head><meta charset="utf-8"><title>Where the runs differ most</title>',
           f'<style>{_DIFFERENCES_STYLE}</style>{_DIFFERENCES_FILTER}</head><body>',
           '<h1>Where the runs differ most</h1>']
  if len(tasks) > 1:
    options = ''.join(f'<option value="{escape(t)}">{escape(t)}</option>' for t in tasks)
    parts.append('<p><label for="task">Task</label><select id="task" onchange="showTask(this.value)">'
                 f'<option value="">all {len(tasks)} tasks</option>{options}</select></p>')
  for section in sections:
    a_label, b_label, task, metric, rows = (section.a_label, section.b_label, section.task, section.metric,
                                            section.rows())
    parts.append(f'<section data-task="{escape(task)}">')
    parts.append(f'<h2>{escape(task)}: {escape(b_label)} vs {escape(a_label)} (per-example {escape(metric)})</h2>')
    parts.append('<table><colgroup><col style="width:8%"><col style="width:32%"><col style="width:20%">'
                 '<col style="width:20%"><col style="width:20%"></colgroup>'
                 f'<tr><th>example</th><th>input</th><th>target</th><th>{escape(a_label)}</th>'
                 f'<th>{escape(b_label)}</th></tr>')
    for index, a, b, a_score, b_score in rows:
      b_class = 'better' if b_score > a_score else 'worse' if b_score < a_score else ''
      parts.append(f"<tr><td>{index}</td><td>{escape(str(a['input']))}</td><td>{escape(str(a['target']))}</td>"
                   f"<td>{escape(str(a['prediction']))}<br><b>{a_score:.1f}</b></td>"
                   f"<td>{escape(str(b['prediction']))}<br><b class=\"{b_class}\">{b_score:.1f}</b></td></tr>")
    parts.append('</table></section>')
  if not sections:
    parts.append('<p>No task with the same examples in the first run and another run.</p>')
  return '\n'.join(parts + ['</body></html>']) + '\n'

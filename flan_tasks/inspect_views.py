"""Notebook views of what `flan_tasks.inspect` reads: HTML, pandas DataFrames and matplotlib charts.

  summary = flan_tasks.inspect.summarize("demo_mix", sequence_length={"inputs": 256, "targets": 64})
  summary                         # in Jupyter / Colab: rendered by summary_html
  inspect_views.lengths_frame(summary); inspect_views.plot_lengths(summary)
  inspect_views.task_table()      # every registered task and mixture (a DataFrame with .to_dataframe())

Formatted examples show the template's own words highlighted and each few-shot exemplar boxed
apart from the query. pandas and matplotlib are imported only by the functions that return their
objects; nothing here needs JAX.
"""
import html
from typing import Dict, List, Optional, Sequence, Tuple

import seqio

from flan_tasks import metrics as metrics_lib, registry, templates as tmpl

_BOX = "border:1px solid #bbb;border-radius:4px;padding:4px 6px;margin:3px 0;"
_EXEMPLAR = "border:1px dashed #5b8def;border-radius:4px;padding:2px 6px;margin:3px 0;background:#f3f7ff;"
_QUERY = "border:1px solid #2e7d32;border-radius:4px;padding:2px 6px;margin:3px 0;background:#f4fbf4;"
_MARK = "background:#ffe58f;"
_LABEL = "font-size:80%;color:#555;"
_PRE = "white-space:pre-wrap;margin:0;font-family:monospace;font-size:90%;"


# ------------------------------------------------------------------------------ marking text
def _literal_spans(text: str, template: str) -> List[Tuple[int, int]]:
  """Where the template's own words (its literal parts) occur in `text`, merged and sorted."""
  spans = []
  for literal, _ in tmpl.split_template(template):
    if len(literal.strip()) < 3:  # a bare ':' or '.' would mark every colon of the text
      continue
    start = text.find(literal)
    while start >= 0:
      spans.append((start, start + len(literal)))
      start = text.find(literal, start + len(literal))
  merged: List[List[int]] = []
  for start, end in sorted(spans):
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  return [(s, e) for s, e in merged]


def marked_html(text: str, template: Optional[str]) -> str:
  """`text` as HTML with the template's literal parts in <mark>."""
  if not template:
    return html.escape(text)
  out, pos = [], 0
  for start, end in _literal_spans(text, template):
    out.append(html.escape(text[pos:start]))
    out.append(f'<mark style="{_MARK}" title="template">{html.escape(text[start:end])}</mark>')
    pos = end
  out.append(html.escape(text[pos:]))
  return "".join(out)


def split_exemplars(text: str, num_shots: int, patterns: Sequence[tmpl.FewShotPattern]
                    ) -> Tuple[List[str], str]:
  """(exemplar blocks, query) of a few-shot prompt; ([], text) when no pattern explains it."""
  if num_shots <= 0:
    return [], text
  for pattern in patterns:
    tail = pattern.x_y_delimiter + pattern.targets_prefix + pattern.final_suffix
    if not text.endswith(tail):
      continue
    marker, blocks, pos = pattern.example_separator + pattern.inputs_prefix, [], 0
    for _ in range(num_shots):
      end = text.find(marker, pos)
      if end < 0:
        break
      end += len(pattern.example_separator)
      blocks.append(text[pos:end])
      pos = end
    if len(blocks) == num_shots and all(b.startswith(pattern.inputs_prefix) for b in blocks):
      return blocks, text[pos:]
  return [], text


def _task_templates(task: str) -> Tuple[Optional[Tuple[Tuple[str, str], ...]], Sequence[tmpl.FewShotPattern]]:
  try:
    info = registry.task_info(task)
  except ValueError:  # a plain SeqIO task (e.g. a Flan Collection stream): no templates to mark
    return None, tmpl.DEFAULT_FEW_SHOT_PATTERNS
  family = tmpl.get_family(info.family) if info.family in tmpl.family_names() else None
  return info.templates, (family.few_shot_patterns if family else tmpl.DEFAULT_FEW_SHOT_PATTERNS)


def example_html(example: Dict[str, object], default_task: str = "", show_pieces: int = 0) -> str:
  """One formatted example: header, inputs (exemplars boxed, template words marked), targets."""
  task = str(example.get("_task_name", default_task))
  idx, shots = int(example.get("_template_idx", -1)), int(example.get("_num_shots", 0) or 0)
  templates, patterns = _task_templates(task)
  input_template, target_template = (templates[idx] if templates and 0 <= idx < len(templates)
                                     else (None, None))
  inputs, targets = str(example.get("inputs_pretokenized", "")), str(example.get("targets_pretokenized", ""))
  exemplars, query = split_exemplars(inputs, shots, patterns)
  parts = [f'<div style="{_BOX}"><div style="{_LABEL}"><b>{html.escape(task)}</b> · template {idx} '
           f'({html.escape(str(example.get("_template_type", "?")))}) · {shots} exemplar(s)</div>']
  if input_template:
    parts.append(f'<div style="{_LABEL}">template: <code>{html.escape(input_template)}</code> → '
                 f'<code>{html.escape(target_template)}</code></div>')
  for i, block in enumerate(exemplars):
    parts.append(f'<div style="{_EXEMPLAR}"><div style="{_LABEL}">exemplar {i + 1}</div>'
                 f'<pre style="{_PRE}">{marked_html(block, input_template)}</pre></div>')
  if shots and not exemplars:
    parts.append(f'<div style="{_LABEL}">({shots} exemplars; their boundaries were not found)</div>')
  parts.append(f'<div style="{_QUERY}"><div style="{_LABEL}">{"query" if exemplars else "inputs"}</div>'
               f'<pre style="{_PRE}">{marked_html(query, input_template)}</pre></div>')
  parts.append(f'<div style="{_BOX}"><div style="{_LABEL}">targets</div>'
               f'<pre style="{_PRE}">{marked_html(targets, target_template)}</pre></div>')
  if show_pieces:
    for feature in ("inputs", "targets"):
      pieces = list(example.get(f"{feature}_pieces") or [])
      visible = lambda p: p.replace(" ", "\u2423").replace("\n", "\u23ce")  # spaces as ␣, newlines as ⏎
      chips = " ".join(f'<code style="background:#eee;margin:1px;">{html.escape(visible(p))}</code>'
                       for p in pieces[:show_pieces])
      more = f" … ({len(pieces) - show_pieces} more)" if len(pieces) > show_pieces else ""
      parts.append(f'<div style="{_LABEL}">{feature} pieces ({len(pieces)}): {chips}{more}</div>')
  parts.append("</div>")
  return "".join(parts)


# ------------------------------------------------------------------------------ tables
def _table_html(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{c}</td>" for c in row) + "</tr>"
                 for row in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rates_rows(summary) -> List[Dict[str, object]]:
  total = sum((summary.rates or {}).values()) or 1.0
  return [{"task": t, "rate": r, "share": r / total}
          for t, r in sorted((summary.rates or {}).items(), key=lambda kv: -kv[1])]


def lengths_rows(summary) -> List[Dict[str, object]]:
  rows = []
  for feature, pct in summary.length_percentiles.items():
    longer = summary.truncated[feature]
    rows.append({"feature": feature, **{f"p{p}": v for p, v in pct.items()},
                 "length": summary.sequence_length[feature], "longer": longer,
                 "sampled": summary.sampled, "truncated_share": longer / max(summary.sampled, 1)})
  return rows


def vocabulary_rows(summary) -> List[Dict[str, object]]:
  rows = []
  for task, check in sorted(summary.vocabulary.items()):
    row = {"task": task}
    for feature in summary.sequence_length:
      row[f"{feature}_tokens"] = check.tokens[feature]
      row[f"{feature}_unk"] = check.unknown[feature]
      row[f"{feature}_unk_rate"] = check.unknown_rate(feature)
    row["unencodable"] = "".join(sorted(check.unencodable, key=lambda c: -check.unencodable[c]))
    row["unencodable_count"] = sum(check.unencodable.values())
    rows.append(row)
  return rows


def _frame(rows):
  import pandas as pd  # pylint: disable=g-import-not-at-top
  return pd.DataFrame(rows).convert_dtypes()  # nullable ints where a column has gaps


def rates_frame(summary):
  return _frame(rates_rows(summary))


def lengths_frame(summary):
  return _frame(lengths_rows(summary))


def vocabulary_frame(summary):
  return _frame(vocabulary_rows(summary))


def examples_frame(summary):
  keys = ("_task_name", "_template_idx", "_template_type", "_num_shots", "inputs_pretokenized",
          "targets_pretokenized")
  return _frame([{k.lstrip("_"): e.get(k) for k in keys} for e in summary.examples])


def summary_html(summary, show_pieces: int = 24) -> str:
  """The whole summary as one HTML block (what a notebook shows for a Summary)."""
  out = [f"<div><h3 style='margin:4px 0'>{html.escape(summary.name)} ({html.escape(summary.split)}) — "
         f"{summary.sampled} examples sampled</h3>"]
  if summary.rates:
    rows = [[html.escape(r["task"]), f"{r['rate']:.1f}", f"{100 * r['share']:.2f}%",
             f"<div style='background:#5b8def;height:10px;width:{int(300 * r['share'])}px'></div>"]
            for r in rates_rows(summary)]
    out.append("<h4>Mixture rates</h4>" + _table_html(["task", "rate", "share", ""], rows))
  if summary.unavailable:
    out.append(f"<p>Left out, data not available here: {html.escape(', '.join(summary.unavailable))}</p>")
  if summary.examples:
    out.append("<h4>Formatted examples</h4><p style='font-size:80%'><mark style='" + _MARK +
               "'>marked</mark>: the template's words; dashed boxes: few-shot exemplars</p>")
    out += [example_html(e, summary.name, show_pieces) for e in summary.examples]
  rows = [[html.escape(t), html.escape(", ".join(f"#{i}: {n}" for i, n in sorted(c.items())))]
          for t, c in sorted(summary.template_counts.items())]
  out.append("<h4>Template usage</h4>" + _table_html(["task", "examples per template"], rows))
  rows = [[r["feature"], *(f"{r[f'p{p}']:.0f}" for p in (50, 90, 95, 99, 100)), r["length"],
           f"{r['longer']}/{r['sampled']} ({100 * r['truncated_share']:.1f}%)"] for r in lengths_rows(summary)]
  out.append("<h4>Token lengths before trimming</h4>" + _table_html(
      ["feature", "p50", "p90", "p95", "p99", "max", "feature length", "longer (truncated)"], rows))
  rows = []
  for r in vocabulary_rows(summary):
    cells = [f"{r[f + '_unk']}/{r[f + '_tokens']} ({100 * r[f + '_unk_rate']:.2f}%)"
             for f in summary.sequence_length]
    rows.append([html.escape(r["task"]), *cells, html.escape(" ".join(r["unencodable"])) or "none"])
  out.append("<h4>Vocabulary</h4>" + _table_html(
      ["task", *(f"<unk> in {f}" for f in summary.sequence_length), "characters it cannot encode"], rows))
  out.append("</div>")
  return "".join(out)


# ------------------------------------------------------------------------------ charts
def plot_rates(summary, ax=None):
  """A horizontal bar per mixture member: its share of the examples."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = rates_rows(summary)
  if not rows:
    raise ValueError(f"{summary.name!r} is a task, not a mixture: it has no rates to plot")
  if ax is None:
    _, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1))
  ax.barh([r["task"] for r in rows][::-1], [100 * r["share"] for r in rows][::-1], color="#5b8def")
  ax.set_xlabel("share of examples (%)")
  ax.set_title(f"{summary.name}: mixture rates")
  return ax.figure


def plot_lengths(summary, bins: int = 30):
  """Token-length histograms (before trimming) with the feature lengths and truncation counts."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  features = list(summary.token_lengths)
  fig, axes = plt.subplots(1, len(features), figsize=(5 * len(features), 3), squeeze=False)
  for ax, feature in zip(axes[0], features):
    limit = summary.sequence_length[feature]
    ax.hist(summary.token_lengths[feature], bins=bins, color="#5b8def")
    ax.axvline(limit, color="#c62828", linestyle="--")
    ax.set_title(f"{feature}: {summary.truncated[feature]}/{summary.sampled} longer than {limit}")
    ax.set_xlabel("tokens (with EOS)")
  fig.tight_layout()
  return fig


# ------------------------------------------------------------------------------ every task
_METRIC_NAMES = {fn: name for name, fn in metrics_lib.METRICS_BY_NAME.items()}


def _examples(task: seqio.Task, split: str) -> object:
  if split not in task.splits:
    return "no split"
  source = task.source
  if hasattr(source, "available") and not source.available(split):
    return "not here"
  try:
    return task.num_input_examples(split)
  except (ValueError, OSError) as err:  # e.g. a bad row in a user's file: shown in its cell
    return f"error: {err}"


class TaskTable:
  """Every registered flan_tasks task and every mixture: one row each; HTML and a DataFrame."""

  def __init__(self, rows: List[Dict[str, object]]):
    self.rows = rows

  def to_dataframe(self):
    return _frame(self.rows)

  def _repr_html_(self) -> str:
    header = list(self.rows[0]) if self.rows else []
    cells = [[html.escape("" if r[h] is None else str(r[h])) for h in header] for r in self.rows]
    return _table_html(header, cells)


def _mixture_count(counts: Sequence[object]) -> object:
  """The members' examples summed; 'not here' when no member's data is on this machine, and the sum
  with how many members are missing when some are."""
  here = [c for c in counts if isinstance(c, int)]
  if not here:
    return "not here"
  missing = len(counts) - len(here)
  return sum(here) if not missing else f"{sum(here)} (+{missing} not here)"


def task_table(splits: Sequence[str] = ("train", "validation"), count_examples: bool = True) -> TaskTable:
  """family, zero/few-shot, template count, examples per split, metrics, held-out or training.

  Counting examples reads each task's files (once; sources keep their rows).
  """
  rows = []
  for info in sorted(registry.all_task_info(), key=lambda i: i.name):
    task = seqio.get_mixture_or_task(info.name)
    row = {"name": info.name, "kind": "task", "group": info.group, "family": info.family, "tasks": 1,
           "shots": "few-shot" if info.variant == "fs" else "zero-shot", "templates": info.num_templates}
    for split in splits:
      row[f"{split}_examples"] = _examples(task, split) if count_examples else "-"
    row["metrics"] = ", ".join(_METRIC_NAMES.get(f, getattr(f, "__name__", "?")) for f in task.metric_fns)
    row["role"] = "held-out" if info.held_out else "training"
    rows.append(row)
  by_name = {r["name"]: r for r in rows}
  for name in sorted(seqio.MixtureRegistry.names()):
    mixture = seqio.get_mixture_or_task(name)
    # flan mixtures list their members even where their data is missing (`tasks` would raise)
    members = mixture.listed_tasks if hasattr(type(mixture), "listed_tasks") else mixture.tasks
    known = {i.name for i in registry.all_task_info()}
    infos = [registry.task_info(t.name) for t in members if t.name in known]
    member_rows = [by_name[t.name] for t in members if t.name in by_name]
    shots = sorted({r["shots"] for r in member_rows}, reverse=True)  # zero-shot before few-shot
    row = {"name": name, "kind": "mixture", "group": ", ".join(sorted({i.group for i in infos})) or "?",
           "family": ", ".join(sorted({i.family for i in infos})), "tasks": len(members),
           "shots": " + ".join(shots) or "-", "templates": "-",
           **{f"{s}_examples": _mixture_count([r[f"{s}_examples"] for r in member_rows]) if count_examples
              else "-" for s in splits},
           "metrics": ", ".join(sorted({m for r in member_rows for m in r["metrics"].split(", ") if m})),
           "role": ("held-out" if infos and all(i.held_out for i in infos) else
                    "training" if infos and not any(i.held_out for i in infos) else "mixed")}
    rows.append(row)
  return TaskTable(rows)

"""Inference evaluation as a library: decode a mixture's tasks, compute their metrics, write reports.

Used by the eval job (`flan_t5x.eval`), the infer job (task inputs) and evaluation during
training. For each task: unpacked inputs at the task's full lengths (or the configured
lengths, counting truncated examples), decoding, detokenization, the task's postprocess_fn
on predictions and targets, its metric_fns; per task and per `_template_idx`. Tasks with
answer options (e.g. 1-5 stars) also get rank classification.

Every process loads the same examples and calls the same batches (the runner splits each
batch over the hosts), so collectives never wait on a host with fewer rows; process 0
writes the reports.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import seqio
from absl import logging

from flan_t5x import checkpoints
from flan_t5x import decoding
from flan_t5x import inference
from flan_t5x import intervals
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import progress
from flan_t5x import sanity
from flan_t5x import summaries
from flan_t5x import task_vocab

PyTree = Any
LENGTH_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class InferenceEvalConfig:
  """What to decode and score (also used for evaluation during training).

  task_feature_lengths: {'inputs': L, 'targets': T} or None for each task's full lengths.
  max_examples: per task, the first N examples of `split` (None: all).
  bootstrap: confidence intervals of every metric per task and template (None: none).
  """
  mixture_or_task_name: str
  split: str = 'validation'
  task_feature_lengths: Mapping[str, int] | None = None
  batch_size: int = 32
  max_examples: int | None = None
  rank_classification: bool = True
  decoding_config: decoding.DecodingConfig = dataclasses.field(default_factory=decoding.DecodingConfig)
  module: str | None = None
  bootstrap: intervals.BootstrapConfig | None = dataclasses.field(default_factory=intervals.BootstrapConfig)


@dataclasses.dataclass
class Example:
  inputs: list[int]
  targets: list[int]
  input_text: str
  target_text: str
  template_idx: int
  raw: dict
  # Tokens of the input and target before SeqIO trimmed them to the requested lengths (None: not trimmed).
  untrimmed_input_length: int | None = None
  untrimmed_target_length: int | None = None


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def tasks_of(name: str) -> list[seqio.Task]:
  provider = seqio.get_mixture_or_task(name)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def _available(task: seqio.Task, split: str) -> bool:
  if split not in task.splits:
    return False
  # Only flan_tasks' tasks can lack their data files, and those exist only once it was imported
  # (importing it here, after gin is locked, would fail).
  mixtures = sys.modules.get('flan_tasks.mixtures')
  return mixtures.task_available(task, split) if mixtures else True


def load_examples(task: seqio.Task, split: str, max_examples: int | None = None,
                  sequence_length: Mapping[str, int] | None = None) -> list[Example]:
  """Tokenized examples of `task` in order, with their metadata features, as seqio.Evaluator (T5X)
  reads them: with `sequence_length` (TASK_FEATURE_LENGTHS) the task's preprocessors see it (few-shot
  formatting fits its shots into it; SeqIO trims and keeps a final EOS), else untruncated."""
  # A partial read of SeqIO's in-memory cache of a small task makes TF warn that it discards the
  # cache; the first `max_examples` need no cache.
  dataset = task.get_dataset(sequence_length=dict(sequence_length) if sequence_length else None, split=split,
                             shuffle=False, use_cached=False, seed=0, try_in_mem_cache=max_examples is None)
  if max_examples is not None:
    dataset = dataset.take(max_examples)
  vocab = task.output_features['targets'].vocabulary

  def untrimmed(ex: dict, feature: str, tokens: list[int], text: str) -> int | None:
    """The token count (EOS included) of a feature SeqIO may have trimmed to `sequence_length`."""
    if not sequence_length or len(tokens) < int(sequence_length[feature]) or f'{feature}_pretokenized' not in ex:
      return None
    return len(task.output_features[feature].vocabulary.encode(text)) + 1

  examples = []
  for ex in dataset.as_numpy_iterator():
    inputs = [int(t) for t in ex['inputs']]
    targets = [int(t) for t in ex['targets']]
    input_text = _text(ex['inputs_pretokenized']) if 'inputs_pretokenized' in ex else vocab.decode(inputs)
    target_text = (_text(ex['targets_pretokenized']) if 'targets_pretokenized' in ex
                   else vocab.decode(decoding.strip_after_eos(np.asarray(targets))))
    examples.append(Example(inputs, targets, input_text, target_text, int(ex.get('_template_idx', -1)),
                            {k: v for k, v in ex.items() if k not in ('inputs', 'targets')},
                            untrimmed(ex, 'inputs', inputs, input_text),
                            untrimmed(ex, 'targets', targets, target_text)))
  return examples


def _lengths(examples: Sequence[Example], feature_lengths: Mapping[str, int] | None) -> tuple[int, int]:
  """(input length, decode length). Without TASK_FEATURE_LENGTHS, as seqio.Evaluator (T5X): the
  longest target (EOS included) of `examples` is the decode length, exactly, so both engines stop a
  prediction at the same token; inputs are padded to a multiple of LENGTH_MULTIPLE (padding does
  not change predictions)."""
  if feature_lengths:
    if 'inputs' not in feature_lengths or 'targets' not in feature_lengths:
      raise ValueError(f"TASK_FEATURE_LENGTHS needs 'inputs' and 'targets', got {dict(feature_lengths)}.")
    return int(feature_lengths['inputs']), int(feature_lengths['targets'])
  longest_input = max(len(e.inputs) for e in examples)
  longest_target = max(len(e.targets) for e in examples)
  return inference.round_up(longest_input, LENGTH_MULTIPLE), longest_target


def compute_metrics(task: seqio.Task, targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  metrics = {}
  for metric_fn in task.predict_metric_fns:
    for name, value in metric_fn(list(targets), list(predictions)).items():
      metrics[name] = float(getattr(value, 'value', value))
  return metrics


def _postprocess(task: seqio.Task, text: str, example: Example, is_target: bool):
  return task.postprocess_fn(text, example=example.raw, is_target=is_target)


def _task_options(task: seqio.Task) -> tuple[str, ...] | None:
  flan_tasks = sys.modules.get('flan_tasks')  # see _available
  if flan_tasks is None:
    return None
  try:
    return flan_tasks.task_info(task.name).options
  except ValueError:
    return None


def _rank_classify(runner: inference.InferenceRunner, params: PyTree, task: seqio.Task,
                   inputs_BxL: np.ndarray, options: Sequence[str], batch_size: int) -> list[str]:
  vocab = task.output_features['targets'].vocabulary
  option_tokens = [list(vocab.encode(o)) + [decoding.EOS_ID] for o in options]
  options_OxT = inference.pad_batch(option_tokens, max(len(t) for t in option_tokens))
  num_options = len(options)
  rows_per_call = max(1, batch_size // num_options) * num_options
  inputs_NxL = np.repeat(inputs_BxL, num_options, axis=0)
  targets_NxT = np.tile(options_OxT, (inputs_BxL.shape[0], 1))
  scores = [runner.score(params, inputs_NxL[i:i + rows_per_call], targets_NxT[i:i + rows_per_call])
            for i in range(0, inputs_NxL.shape[0], rows_per_call)]
  best_B = np.concatenate(scores).reshape(-1, num_options).argmax(axis=1)
  return [options[i] for i in best_B]


class Interrupted(Exception):
  """`should_stop` said so between two decode batches (a SIGTERM during an evaluation in training)."""


def evaluate_task(runner: inference.InferenceRunner, params: PyTree, task: seqio.Task,
                  cfg: InferenceEvalConfig, examples: Sequence[Example] | None = None,
                  lengths: tuple[int, int] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[dict, list[dict]]:
  """(result dict, prediction records) for one task; `lengths` (inputs, decode) default to its own.
  Raises Interrupted when `should_stop()` turns true before a batch (single-process runs only:
  with several processes every host must decode every batch)."""
  examples = examples if examples is not None else load_examples(task, cfg.split, cfg.max_examples,
                                                                 cfg.task_feature_lengths)
  if not examples:
    raise ValueError(f'Task {task.name!r} has no {cfg.split!r} examples.')
  input_length, target_length = lengths or _lengths(examples, cfg.task_feature_lengths)
  fitted = [inference.fit_tokens(e.inputs, input_length) for e in examples]
  inputs_BxL = inference.pad_batch([tokens for tokens, _ in fitted], input_length)
  vocab = task.output_features['targets'].vocabulary
  tick = time.perf_counter()
  predictions_text = []
  num_batches = -(-len(examples) // cfg.batch_size)
  if jax.process_index() == 0:
    progress.say(f'[flan_t5x] {task.name}: decoding {len(examples)} examples in {num_batches} batches '
                 f'(inputs {input_length}, up to {target_length} target tokens)')
  bar = progress.Progress(num_batches, f'decode {task.name}', 'batch', lines=jax.process_index() == 0,
                          terminal=progress.on_terminal() and jax.process_index() == 0)
  for start in range(0, len(examples), cfg.batch_size):
    if should_stop is not None and jax.process_count() == 1 and should_stop():
      bar.close()
      raise Interrupted(f'{task.name}: stopped after {start} of {len(examples)} examples')
    tokens_BxKxT, _ = runner.predict(params, inputs_BxL[start:start + cfg.batch_size], target_length)
    predictions_text += [vocab.decode(decoding.strip_after_eos(row[0])) for row in tokens_BxKxT]
    bar.update()
  bar.close()
  decode_seconds = time.perf_counter() - tick

  targets = [_postprocess(task, e.target_text, e, True) for e in examples]
  predictions = [_postprocess(task, p, e, False) for p, e in zip(predictions_text, examples)]
  by_template = collections.defaultdict(list)
  for index, example in enumerate(examples):
    by_template[example.template_idx].append(index)
  result = {
      'task': task.name, 'split': cfg.split, 'num_examples': len(examples), 'requested_examples': cfg.max_examples,
      'input_length': input_length, 'max_decode_length': target_length,
      'truncated_inputs': sum(truncated or (e.untrimmed_input_length or 0) > input_length
                              for (_, truncated), e in zip(fitted, examples)),
      'truncated_targets': sum((e.untrimmed_target_length or len(e.targets)) > target_length for e in examples),
      'decoding': dataclasses.asdict(runner.decoding_config), 'decode_seconds': decode_seconds,
      'flags': sanity.prediction_flags(predictions_text, [e.target_text for e in examples], cfg.max_examples),
      'by_template': {str(idx): {'num_examples': len(rows)} for idx, rows in sorted(by_template.items())},
  }
  _score(task, cfg, result, 'metrics', targets, predictions, by_template)
  options = _task_options(task) if cfg.rank_classification else None
  if options:
    ranked = _rank_classify(runner, params, task, inputs_BxL, options, cfg.batch_size)
    ranked_post = [_postprocess(task, r, e, False) for r, e in zip(ranked, examples)]
    _score(task, cfg, result, 'rank_classification', targets, ranked_post, by_template)
  records = [{'input': e.input_text, 'target': e.target_text, 'prediction': p, 'template_idx': e.template_idx,
              **_scored(t, q)}
             for e, p, t, q in zip(examples, predictions_text, targets, predictions)]
  return result, records


def _score(task: seqio.Task, cfg: InferenceEvalConfig, result: dict, group: str, targets: Sequence[Any],
           predictions: Sequence[Any], by_template: Mapping[int, Sequence[int]]) -> None:
  """result[group] (and per template) = the metrics; with cfg.bootstrap also result['intervals'][group]."""
  if cfg.bootstrap is None:
    result[group] = compute_metrics(task, targets, predictions)
    for idx, rows in by_template.items():
      result['by_template'][str(idx)][group] = compute_metrics(
          task, [targets[i] for i in rows], [predictions[i] for i in rows])
    return
  scores = intervals.ExampleScores(task.predict_metric_fns, targets, predictions)
  result[group] = dict(scores.metrics)
  result['bootstrap'] = cfg.bootstrap.record()
  result.setdefault('intervals', {})[group] = intervals.metric_intervals(scores, cfg.bootstrap, key=task.name)
  for idx, rows in by_template.items():
    found = intervals.metric_intervals(scores, cfg.bootstrap, rows, key=f'{task.name}/{idx}')
    sub = result['by_template'][str(idx)]
    sub[group] = {name: found[name]['value'] for name in found}
    sub.setdefault('intervals', {})[group] = found


def _scored(target: Any, prediction: Any) -> dict:
  """The postprocessed target and prediction the metrics saw, where JSON holds them as they are."""
  plain = (str, int, float, bool, type(None))
  if isinstance(target, plain) and isinstance(prediction, plain):
    return {'scored_target': target, 'scored_prediction': prediction}
  return {}


def evaluate_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
                    params: PyTree, cfg: InferenceEvalConfig,
                    runner: inference.InferenceRunner | None = None,
                    should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, dict], dict[str, list]]:
  """Evaluates every available task of the mixture; ({task: result}, {task: records})."""
  if cfg.module:
    import importlib  # pylint: disable=g-import-not-at-top
    importlib.import_module(cfg.module)
  runner = runner or inference.InferenceRunner(model, partitioner, cfg.decoding_config)
  examples = {}
  for task in tasks_of(cfg.mixture_or_task_name):
    if not _available(task, cfg.split):
      logging.warning('Skipping %s: no %r data available.', task.name, cfg.split)
      progress.say(f'[flan_t5x] skipping {task.name}: no {cfg.split} data available')
      continue
    examples[task] = load_examples(task, cfg.split, cfg.max_examples, cfg.task_feature_lengths)
    if not examples[task]:
      raise ValueError(f'Task {task.name!r} has no {cfg.split!r} examples.')
  if not examples:
    raise ValueError(f'No task of {cfg.mixture_or_task_name!r} has {cfg.split!r} data available.')
  # One set of lengths for every task of the mixture, as seqio.Evaluator measures them.
  lengths = _lengths([e for rows in examples.values() for e in rows], cfg.task_feature_lengths)
  results, records = {}, {}
  for task, rows in examples.items():
    results[task.name], records[task.name] = evaluate_task(runner, params, task, cfg, rows, lengths, should_stop)
    progress.say(f'[flan_t5x] {task.name}: {_format_metrics(results[task.name])}')
  return results, records


def _format_metrics(result: dict) -> str:
  parts = [f'{k} {v:.2f}' for k, v in result['metrics'].items()]
  parts += [f'rank_{k} {v:.2f}' for k, v in result.get('rank_classification', {}).items()]
  return ', '.join(parts)


# --------------------------------------------------------------------- outputs

def scalars(results: Mapping[str, dict]) -> dict[str, float]:
  """TensorBoard scalar names: `<task>/<metric>` and `<task>/template_<i>/<metric>`."""
  out = {}
  for task, result in results.items():
    for group, prefix in (('metrics', ''), ('rank_classification', 'rank_classification/')):
      for name, value in result.get(group, {}).items():
        out[f'{task}/{prefix}{name}'] = value
        for idx, sub in result['by_template'].items():
          if name in sub.get(group, {}):
            out[f'{task}/template_{idx}/{prefix}{name}'] = sub[group][name]
  return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  fmt = lambda v: f'{v:.2f}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def _metric_columns(results: Mapping[str, dict]) -> list[tuple[str, str]]:
  columns = []
  for result in results.values():
    for group in ('metrics', 'rank_classification'):
      for name in result.get(group, {}):
        if (group, name) not in columns:
          columns.append((group, name))
  return columns


def _column_name(group: str, name: str) -> str:
  return name if group == 'metrics' else f'rank {name}'


def _legend(columns: Sequence[tuple[str, str]]) -> str:
  lines = ['truncated inputs / targets: examples whose input was cut to the input length, and whose '
           'target is longer than the decode length (its prediction cannot be complete).']
  if any(group == 'rank_classification' for group, _ in columns):
    lines.append('rank <metric>: the metric when the prediction is the answer option (e.g. 1-5 stars) '
                 'the model gives the highest log-likelihood (rank classification), instead of the '
                 'decoded text.')
  return '\n'.join(lines)
def _cell(result: Mapping[str, Any], group: str, name: str) -> str:
  """'12.30 [10.10, 14.50]' (value and bootstrap interval), the value alone, or '' if not computed."""
  value = result.get(group, {}).get(name)
  if value is None:
    return ''
  found = result.get('intervals', {}).get(group, {}).get(name)
  if found is None:
    return intervals.format_number(value)
  return intervals.format_interval(value, found['low'], found['high'])


def markdown_report(results: Mapping[str, dict], title: str = '') -> str:
  columns = _metric_columns(results)
  header = ['task', 'examples', 'truncated inputs', 'truncated targets'] + [_column_name(*c) for c in columns]
  task_rows = [[task, r['num_examples'], r['truncated_inputs'], r.get('truncated_targets', '')]
               + [_cell(r, g, n) for g, n in columns] for task, r in results.items()]
  template_rows = [[task, idx, sub['num_examples']] + [_cell(sub, g, n) for g, n in columns]
                   for task, r in results.items() for idx, sub in r['by_template'].items()]
  parts = [f'## {title}\n' if title else '', _table(header, task_rows), '\n\n', _legend(columns),
           '\n\n### By template\n',
           _table(['task', 'template', 'examples'] + [_column_name(*c) for c in columns], template_rows)]
  settings = next((r['bootstrap'] for r in results.values() if 'bootstrap' in r), None)
  if settings:
    parts.append(f"\n\nBrackets: {settings['confidence']:.0%} bootstrap intervals ({settings['resamples']} resamples "
                 f"of the examples, seed {settings['seed']}).")
  flagged = [(task, f) for task, r in results.items() for f in r.get('flags', [])]
  if flagged:
    parts.append('\n\n### Sanity flags\n\n' + '\n'.join(f"- {task}: **{f['flag']}**: {f['detail']}"
                                                       for task, f in flagged))
  return ''.join(parts) + '\n'


def write_outputs(output_dir: str, results: Mapping[str, dict], records: Mapping[str, list], step: int,
                  checkpoint_path: str | None, checkpoint: dict | None = None,
                  json_write_n_results: int | None = None) -> str:
  """Writes the JSON, JSONL, markdown and TensorBoard outputs; returns the markdown.

  `checkpoint` is the fingerprint of what was evaluated (checkpoint_import.checkpoint_fingerprint,
  taken before loading it); results.json and every <task>.json record it with the step, next to
  each task's decoding settings, so readers (flan_t5x.compare) can refuse to mix checkpoints.
  """
  output_dir = os.path.abspath(output_dir)
  report = markdown_report(results, f'{checkpoint_path or "params"} (step {step})')
  if jax.process_index() != 0:
    return report
  results = {task: {**result, 'step': step, 'checkpoint': checkpoint} for task, result in results.items()}
  for task, result in results.items():
    checkpoints.write_text_atomically(os.path.join(output_dir, f'{task}.json'), json.dumps(result, indent=2) + '\n')
    checkpoints.write_text_atomically(
        os.path.join(output_dir, f'{task}-predictions.jsonl'),
        ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in records[task]))
  summary = {'checkpoint_path': checkpoint_path, 'step': step, 'checkpoint': checkpoint, 'tasks': results}
  checkpoints.write_text_atomically(os.path.join(output_dir, 'results.json'), json.dumps(summary, indent=2) + '\n')
  checkpoints.write_text_atomically(os.path.join(output_dir, 'results.md'), report)
  write_t5x_files(os.path.join(output_dir, 'inference_eval'), results,
                  {task: rows[:json_write_n_results] for task, rows in records.items()}, step)
  writer = summaries.SummaryWriter(os.path.join(output_dir, 'inference_eval'))
  writer.write(step, scalars(results))
  writer.close()
  return report


def write_t5x_files(directory: str, results: Mapping[str, dict], records: Mapping[str, list], step: int) -> None:
  """T5X's evaluation files (seqio.JSONLogger's layout), for T5X users' tooling:
  `<task>-metrics.jsonl` gets one more line {"step", <metric>: value, ...} (T5X appends one per
  evaluation), `<task>-<step:06>.jsonl` one line per example {"input": {"inputs_pretokenized",
  "targets_pretokenized"}, "target", "output", "prediction"} ("output" the decoded text, "target"
  and "prediction" the postprocessed values the metrics saw; T5X's "input" also holds the tokenized
  features and the task's other fields)."""
  for task, result in results.items():
    metrics_path = os.path.join(directory, f'{task}-metrics.jsonl')
    earlier = open(metrics_path, encoding='utf-8').read() if os.path.exists(metrics_path) else ''
    line = json.dumps({'step': step, **result['metrics']})
    checkpoints.write_text_atomically(metrics_path, earlier + line + '\n')
    lines = [json.dumps({'input': {'inputs_pretokenized': r['input'], 'targets_pretokenized': r['target']},
                         'target': r.get('scored_target', r['target']), 'output': r['prediction'],
                         'prediction': r.get('scored_prediction', r['prediction'])}, ensure_ascii=False)
             for r in records[task]]
    checkpoints.write_text_atomically(os.path.join(directory, f'{task}-{step:06d}.jsonl'),
                                      ''.join(l + '\n' for l in lines))


# ----------------------------------------------------------------- the eval job

def evaluate_checkpoint(*, model: models.EncoderDecoderModel, checkpoint_path: str, output_dir: str,
                        mixture_or_task_name: str = 'flan_heldout', split: str = 'validation',
                        task_feature_lengths: Mapping[str, int] | None = None, batch_size: int = 32,
                        max_examples: int | None = None, rank_classification: bool = True,
                        decoding_config: decoding.DecodingConfig | None = None,
                        partitioner: partitioning.PjitPartitioner | None = None,
                        module: str | None = None, json_write_n_results: int | None = None) -> dict[str, dict]:
  """Loads CHECKPOINT_PATH, evaluates the mixture, writes outputs; returns {task: result}.

  `decoding_config` None: the model's decode_fn (T5X's default: beam search, one beam).
  `json_write_n_results`: examples per task in T5X's inference_eval/<task>-<step>.jsonl (None: all).
  """
  partitioner = partitioner or partitioning.PjitPartitioner()
  cfg = InferenceEvalConfig(mixture_or_task_name, split, task_feature_lengths, batch_size, max_examples,
                            rank_classification, decoding_config or model.decoding_config(), module)
  task_vocab.check_vocabularies(model, mixture_or_task_name, module)
  # Fingerprint first and load what was fingerprinted, even if a MODEL_DIR gets a newer step meanwhile
  # (chosen again if a running trainer deletes it first); base + adapter: the adapted model.
  model, params, step, fingerprint = inference.load_checkpoint(model, partitioner, checkpoint_path)
  print(f'[flan_t5x] evaluating {checkpoint_path} (step {step}) on {mixture_or_task_name}/{split}', flush=True)
  results, records = evaluate_params(model, partitioner, params, cfg)
  report = write_outputs(output_dir, results, records, step, checkpoint_path, fingerprint, json_write_n_results)
  if jax.process_index() == 0:
    print(report, flush=True)
    print(f'[flan_t5x] wrote {os.path.abspath(output_dir)}', flush=True)
  return results

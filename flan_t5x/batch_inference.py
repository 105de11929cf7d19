r"""Batch inference: JSONL of raw inputs (or a SeqIO task split) -> JSONL predictions, resumable
(the work of `python -m flan_t5x.infer`, flan_t5x/infer.py).

Each host (`jax.process_index()` of `jax.process_count()`) takes every
process_count-th input line. All hosts decode together on the global mesh, in
chunks of `chunk_size` of each host's lines: every host runs the same number of
chunks and batches (a host with fewer lines pads them with rows that are
dropped afterwards), so no collective waits on a host that has finished, and
each input line is decoded exactly once. A host's chunk is written atomically
as `host-<i>-of-<n>/chunk-<k>.jsonl`, then its completion marker
`chunk-<k>.done`; a restarted job skips the chunks every host has completed,
so a killed job resumes without duplicating or losing lines. When all chunks are done the host's lines are
joined into `predictions-<i>-of-<n>.jsonl` (also atomically).

A job is resumed only if it is the same job: each host's `manifest.json` records the checkpoint's
fingerprint (path, step, hash of its metadata: checkpoint_import.checkpoint_fingerprint), a hash of
the host's input lines and the settings that change predictions (DecodingConfig, lengths, batch
size, seed, model); each chunk marker records its lines' hash and the job's. Run into a directory
holding another job, it refuses (naming what changed) and writes nothing, or with
INFER_ON_MISMATCH='new_dir' starts fresh in `<dir>-2` (or the first such sibling free or holding
this job). Old and new chunks are never mixed. Output lines:
{"index": input line number, "input": ..., "prediction": ..., "score": ...}
(+ "target" for a task; + "predictions"/"scores" when num_decodes > 1). For a task, T5X's layout
too: `<task>-predict.jsonl-<i>-of-<n>` (write_t5x_predictions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import decoding
from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import progress

PyTree = Any
MANIFEST = 'manifest.json'


def read_jsonl_inputs(path: str, input_field: str) -> list[dict]:
  """[{'index', 'input'}] for each non-empty line; ValueError naming the file, line and field otherwise."""
  rows = []
  with open(path, 'rb') as f:
    for line_number, raw in enumerate(f):
      where = f'{path}:{line_number + 1}'
      try:
        line = raw.decode('utf-8')
      except UnicodeDecodeError as err:
        raise ValueError(f'{where}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); '
                         'save the file as UTF-8.') from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f'{where}: not valid JSON ({err}).') from None
      if not isinstance(record, dict) or not isinstance(record.get(input_field), str):
        got = (f'field {input_field!r} = {record.get(input_field)!r:.80}' if isinstance(record, dict)
               and input_field in record else f'{line.strip()[:200]!r}')
        raise ValueError(f'{where}: expected an object with a string field '
                         f'{input_field!r} (INFER_INPUT_FIELD), got {got}.')
      rows.append({'index': line_number, 'input': record[input_field]})
  return rows


def read_task_inputs(mixture_or_task_name: str, split: str, max_examples: int | None,
                     sequence_length: dict[str, int] | None = None) -> list[dict]:
  """The examples as T5X's infer reads them: with `sequence_length`, the tasks' preprocessors see it."""
  rows = []
  for task in evaluation.tasks_of(mixture_or_task_name):
    for example in evaluation.load_examples(task, split, max_examples, sequence_length):
      rows.append({'index': len(rows), 'input': example.input_text, 'target': example.target_text,
                   'task': task.name, 'tokens': example.inputs})
  return rows


def host_rows(rows: Sequence[dict], process_index: int, process_count: int) -> list[dict]:
  return [row for i, row in enumerate(rows) if i % process_count == process_index]


def _host_dir(output_dir: str, process_index: int, process_count: int) -> str:
  return os.path.join(output_dir, f'host-{process_index:05d}-of-{process_count:05d}')


def _chunk_paths(host_dir: str, chunk: int) -> tuple[str, str]:
  base = os.path.join(host_dir, f'chunk-{chunk:05d}')
  return base + '.jsonl', base + '.done'


def _read_marker(host_dir: str, chunk: int) -> dict | None:
  done_path = _chunk_paths(host_dir, chunk)[1]
  if not os.path.exists(done_path):
    return None
  with open(done_path) as f:
    return json.loads(f.read() or 'null')


def _remove_interrupted_writes(host_dir: str) -> None:
  """A killed job leaves the temporary files of its atomic writes (`chunk-3.done.tmpab12`); never read."""
  if not os.path.isdir(host_dir):
    return
  stale = sorted(name for name in os.listdir(host_dir) if re.fullmatch(r'.+\.(jsonl|done|json)\.tmp\w*', name))
  for name in stale:
    os.remove(os.path.join(host_dir, name))
  if stale:
    logging.info('Removed %d temporary files of an interrupted job in %s: %s', len(stale), host_dir, stale)


def chunk_done(host_dir: str, chunk: int, expected_lines: int) -> bool:
  """Whether the chunk's data file and completion marker are both complete (fingerprints: _differences)."""
  data_path, done_path = _chunk_paths(host_dir, chunk)
  if not (os.path.exists(done_path) and os.path.exists(data_path)):
    return False
  with open(data_path) as f:
    return sum(1 for _ in f) == expected_lines


# ------------------------------------------------------------------ fingerprints

ON_MISMATCH = ('refuse', 'new_dir')


def _sha256(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def params_fingerprint(params: PyTree) -> dict:
  """A fingerprint of in-memory parameters (when no checkpoint_path names them): a hash of every value."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      raise ValueError('infer(params=...) with parameters sharded over hosts needs checkpoint_path to name '
                       'where they come from (it is recorded with the outputs).')
    value = np.asarray(leaf)
    digest.update(f'{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}'.encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return {'path': None, 'format': 'params', 'resolved': None, 'step': None, 'sha256': digest.hexdigest()}


_MODEL_FIELDS_NOT_IN_PREDICTIONS = ('dropout_rate', 'remat_policy', 'scan_layers')


def decoding_settings(model: models.EncoderDecoderModel, decoding_config: decoding.DecodingConfig,
                      max_decode_length: int, input_length: int | None, batch_size: int, seed: int) -> dict:
  """Everything besides the checkpoint and the inputs that changes predictions."""
  model_config = {k: v for k, v in dataclasses.asdict(model.config).items()
                  if k not in _MODEL_FIELDS_NOT_IN_PREDICTIONS}
  return {'decoding': dataclasses.asdict(decoding_config), 'max_decode_length': max_decode_length,
          'input_length': input_length, 'batch_size': batch_size, 'seed': seed,
          'model': json.loads(json.dumps(model_config, default=str)),
          'vocabulary': type(model.output_vocabulary).__name__}


def _flatten(value, prefix: str = '') -> dict:
  if isinstance(value, dict):
    out = {}
    for key, sub in value.items():
      out.update(_flatten(sub, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: value}


def _changed_lines(host_dir: str, chunk_hashes: Sequence[str], chunk_indices: Sequence[list[int]]) -> str:
  """Which finished chunks were made from other input lines than these."""
  changed = []
  for chunk, (expected, indices) in enumerate(zip(chunk_hashes, chunk_indices)):
    marker = _read_marker(host_dir, chunk)
    if marker and marker.get('inputs_sha256') != expected:
      lines = [str(i + 1) for i in indices]
      lines = lines if len(lines) <= 6 else lines[:3] + ['...'] + lines[-1:]
      changed.append(f'chunk {chunk} (lines {", ".join(lines)})')
  return f'; finished chunks whose input lines differ: {", ".join(changed)}' if changed else ''


def _differences(host_dir: str, manifest: dict, chunk_hashes: Sequence[str],
                 chunk_indices: Sequence[list[int]]) -> list[str]:
  """What differs between this job and the one whose chunks `host_dir` holds ([]: none, or no job there)."""
  path = os.path.join(host_dir, MANIFEST)
  differences = []
  if not os.path.exists(path):  # no job there, unless chunks are (checked below)
    previous = manifest
  else:
    with open(path) as f:
      previous = json.load(f)
  if not checkpoint_import.same_checkpoint(previous.get('checkpoint'), manifest['checkpoint']):
    differences.append(f"checkpoint: {checkpoint_import.describe_checkpoint(previous.get('checkpoint'))} -> "
                       f"{checkpoint_import.describe_checkpoint(manifest['checkpoint'])}")
  old, new = _flatten({k: v for k, v in previous.items() if k != 'checkpoint'}), _flatten(
      {k: v for k, v in manifest.items() if k != 'checkpoint'})
  for key in sorted(set(old) | set(new)):
    before, after = old.get(key, '(not recorded)'), new.get(key, '(not recorded)')
    if before == after:
      continue
    if key == 'inputs_sha256':  # which lines: from the finished chunks' markers
      differences.append(f'input lines: sha256 {str(before)[:12]} -> {after[:12]}'
                         f'{_changed_lines(host_dir, chunk_hashes, chunk_indices)}')
    else:
      differences.append(f'{key}: {before!r} -> {after!r}')
  if not differences:  # the manifest matches (or there is none); every finished chunk must too
    for chunk, expected in enumerate(chunk_hashes):
      marker = _read_marker(host_dir, chunk)
      if marker is not None and (marker.get('inputs_sha256'), marker.get('job_sha256')) != (
          expected, _job_sha256(manifest)):
        differences.append(f'{_chunk_paths(host_dir, chunk)[1]}: written by another job than this one '
                           f'({marker})')
  return differences


def _job_sha256(manifest: dict) -> str:
  """A hash of what made a chunk besides its own input lines (the checkpoint by identity, not path)."""
  job = {k: v for k, v in manifest.items() if k not in ('inputs_sha256', 'num_rows')}
  job['checkpoint'] = {k: (manifest['checkpoint'] or {}).get(k) for k in checkpoint_import.FINGERPRINT_KEYS}
  return _sha256(job)


def _hosts_where(flag: bool) -> list[int]:
  """The processes where `flag` is true (collective: every process calls it)."""
  if jax.process_count() == 1:
    return [0] if flag else []
  gathered = multihost_utils.process_allgather(np.asarray([int(flag)], np.int64))
  return [i for i, value in enumerate(np.asarray(gathered).reshape(-1)) if value]


def _sibling(output_dir: str, attempt: int) -> str:
  return output_dir if attempt == 0 else f'{output_dir}-{attempt + 1}'


def _choose_output_dir(output_dir: str, manifest: dict, chunk_hashes: Sequence[str],
                       chunk_indices: Sequence[list[int]], on_mismatch: str) -> str:
  """`output_dir` if it is empty or holds this same job; else refuses, or (new_dir) the first sibling
  `<output_dir>-2`, `-3`, ... that is. The same answer on every host (collective)."""
  process_index, process_count = jax.process_index(), jax.process_count()
  for attempt in range(1000):
    candidate = _sibling(output_dir, attempt)
    differences = _differences(_host_dir(candidate, process_index, process_count), manifest, chunk_hashes,
                               chunk_indices)
    hosts = _hosts_where(bool(differences))
    if not hosts:
      if attempt:
        print(f'[flan_t5x] INFER_ON_MISMATCH=new_dir: writing to {candidate}', flush=True)
      return candidate
    reason = ('\n  '.join(differences) if differences else
              f'(found by host(s) {hosts}; see their logs)')
    if on_mismatch != 'new_dir':
      raise ValueError(
          f'{candidate} holds a different job: it was written with other inputs, checkpoint or decoding '
          f'settings than this run, and its predictions are not this run\'s. Changed:\n  {reason}\n'
          f'Nothing was written. Use a new INFER_OUTPUT_DIR, delete {candidate}, or set '
          "INFER_ON_MISMATCH='new_dir' (infer(on_mismatch='new_dir')) to start fresh in a sibling directory.")
    print(f'[flan_t5x] {candidate} holds a different job (changed: {reason}); leaving it as it is.', flush=True)
  raise ValueError(f'{output_dir}: 1000 sibling directories hold other jobs; use a new INFER_OUTPUT_DIR.')


_PADDING = {'index': -1, 'input': '', 'padding': True}


def _padded(chunk_rows: Sequence[dict], length: int) -> list[dict]:
  """A host's rows of one chunk, padded to the length every host uses for that chunk."""
  return list(chunk_rows) + [dict(_PADDING) for _ in range(length - len(chunk_rows))]


def _tokens(row: dict, vocabulary) -> list[int]:
  return row['tokens'] if 'tokens' in row else list(vocabulary.encode(row['input'])) + [decoding.EOS_ID]


def _all_hosts(values: list[int], reduce) -> list[int]:
  """Element-wise `reduce` (np.max / np.min) of an integer list over all processes."""
  if jax.process_count() == 1:
    return values
  gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
  return [int(v) for v in reduce(np.asarray(gathered).reshape(jax.process_count(), -1), axis=0)]


def decode_rows(runner: inference.InferenceRunner, params: PyTree, vocabulary, rows: Sequence[dict],
                batch_size: int, input_length: int | None, max_decode_length: int,
                rng: jax.Array, bar: progress.Progress | None = None) -> tuple[list[dict], int]:
  """Prediction records for this host's `rows` (padding rows dropped) and the number of truncated inputs;
  `bar` advances by the rows of each batch.

  Collective: every host calls it with the same number of rows.
  """
  token_lists = [_tokens(row, vocabulary) for row in rows]
  # Every host must compile the same shapes: the longest input over all hosts sets the length.
  length = input_length or inference.round_up(_all_hosts([max(len(t) for t in token_lists)], np.max)[0], 32)
  fitted = [inference.fit_tokens(t, length) for t in token_lists]
  inputs_BxL = inference.pad_batch([t for t, _ in fitted], length)
  records = []
  for start in range(0, len(rows), batch_size):
    rng, batch_rng = jax.random.split(rng)
    tokens_BxKxT, scores_BxK = runner.predict_local(params, inputs_BxL[start:start + batch_size],
                                                    max_decode_length, batch_rng)
    if bar is not None:
      bar.update(len(rows[start:start + batch_size]))
    for row, tokens_KxT, scores_K in zip(rows[start:start + batch_size], tokens_BxKxT, scores_BxK):
      if row.get('padding'):
        continue
      texts = [vocabulary.decode(decoding.strip_after_eos(t)) for t in tokens_KxT]
      record = {k: v for k, v in row.items() if k != 'tokens'}
      record.update(prediction=texts[0], score=float(scores_K[0]))
      if len(texts) > 1:
        record.update(predictions=texts, scores=[float(s) for s in scores_K])
      records.append(record)
  truncated = sum(truncated for (_, truncated), row in zip(fitted, rows) if not row.get('padding'))
  return records, truncated


def infer(*, model: models.EncoderDecoderModel, checkpoint_path: str, output_dir: str,
          input_path: str | None = None, input_field: str = 'inputs',
          mixture_or_task_name: str | None = None, split: str = 'validation', max_examples: int | None = None,
          chunk_size: int = 256, batch_size: int = 32, input_length: int | None = None,
          max_decode_length: int = 128, decoding_config: decoding.DecodingConfig | None = None,
          seed: int = 0, partitioner: partitioning.PjitPartitioner | None = None,
          params: PyTree = None, max_chunks: int | None = None, on_mismatch: str = 'refuse',
          run_config: str | None = None) -> str | None:
  """Decodes this host's share of the inputs; returns its predictions file (None if stopped early).

  Every process calls it. Exactly one of `input_path` (JSONL, text in `input_field`) and
  `mixture_or_task_name`. `max_chunks` stops after that many new chunks (to bound a run;
  resuming continues). `params` overrides loading `checkpoint_path` (then `checkpoint_path`, if
  given, must be where they come from; without it they are fingerprinted by value).

  The manifest and every chunk marker record the checkpoint's fingerprint, the input lines' hash and
  the decoding settings. An `output_dir` holding chunks of a job that differs in any of them is
  never resumed or overwritten: `on_mismatch='refuse'` raises ValueError naming what changed,
  'new_dir' writes to the first sibling `<output_dir>-2`, `-3`, ... that is empty or holds this job.
  `run_config` (the gin config) is written as config-<process>.gin when the job starts.
  """
  if (input_path is None) == (mixture_or_task_name is None):
    raise ValueError('Give exactly one of INFER_INPUT_PATH (JSONL) and MIXTURE_OR_TASK_NAME.')
  if chunk_size < 1 or batch_size < 1:
    raise ValueError(f'chunk_size and batch_size must be positive, got {chunk_size}, {batch_size}.')
  if on_mismatch not in ON_MISMATCH:
    raise ValueError(f'INFER_ON_MISMATCH={on_mismatch!r}; expected one of {ON_MISMATCH}.')
  decoding_config = decoding_config or model.decoding_config()
  all_rows = (read_jsonl_inputs(input_path, input_field) if input_path
              else read_task_inputs(mixture_or_task_name, split, max_examples,
                                    {'inputs': input_length, 'targets': max_decode_length} if input_length else None))
  if not all_rows:  # before any work: an empty predictions file would look like a finished job
    raise ValueError(f'{input_path}: no inputs (the file has no non-empty line); infer needs at least one JSON '
                     f'line with a string field {input_field!r}.' if input_path else
                     f'{mixture_or_task_name}/{split}: no examples to infer on.')
  fingerprint = (params_fingerprint(params) if params is not None and not checkpoint_path
                 else inference.checkpoint_fingerprint(checkpoint_path))
  if params is None:  # base + adapter: the adapted model
    model = inference.model_for_checkpoint(model, fingerprint['resolved'])
  process_index, process_count = jax.process_index(), jax.process_count()
  rows = host_rows(all_rows, process_index, process_count)
  rows_per_host = -(-len(all_rows) // process_count)  # the most any host has
  num_chunks = -(-rows_per_host // chunk_size)
  chunk_rows = lambda k: rows[k * chunk_size:(k + 1) * chunk_size]
  chunk_hashes = [_sha256(chunk_rows(k)) for k in range(num_chunks)]
  manifest = {'input': os.path.abspath(input_path) if input_path else f'{mixture_or_task_name}/{split}',
              'input_field': input_field, 'max_examples': max_examples, 'chunk_size': chunk_size,
              'num_rows': len(rows), 'process_count': process_count, 'inputs_sha256': _sha256(chunk_hashes),
              'checkpoint': fingerprint,
              'settings': decoding_settings(model, decoding_config, max_decode_length, input_length,
                                            batch_size, seed)}
  output_dir = _choose_output_dir(os.path.abspath(output_dir), manifest, chunk_hashes,
                                  [[r['index'] for r in chunk_rows(k)] for k in range(num_chunks)], on_mismatch)
  host_dir = _host_dir(output_dir, process_index, process_count)
  _remove_interrupted_writes(host_dir)
  created = [path for path in (output_dir, host_dir) if not os.path.exists(path)]
  if not os.path.exists(os.path.join(host_dir, MANIFEST)):
    checkpoints.write_text_atomically(os.path.join(host_dir, MANIFEST), json.dumps(manifest, indent=2) + '\n')
    created.append(os.path.join(host_dir, MANIFEST))
  config_path = os.path.join(output_dir, f'config-{process_index:05d}.gin')
  if run_config is not None and not os.path.exists(config_path):
    checkpoints.write_text_atomically(config_path, run_config)
    created.append(config_path)
  try:
    path = _predict_chunks(model, partitioner, decoding_config, params, fingerprint, output_dir, host_dir,
                           rows, num_chunks, chunk_size, rows_per_host, chunk_hashes, manifest, max_chunks,
                           batch_size, input_length, max_decode_length, seed, process_index, process_count)
  except BaseException:
    _remove_if_nothing_predicted(host_dir, created)
    raise
  if path is not None and mixture_or_task_name is not None:
    write_t5x_predictions(path, output_dir, process_index, process_count)
  return path


def write_t5x_predictions(predictions_path: str, output_dir: str, process_index: int, process_count: int) -> None:
  """T5X's infer layout beside flan_t5x's: per task `<task>-predict.jsonl-<i:05d>-of-<n:05d>`, one line
  {"inputs": {"inputs_pretokenized", "targets_pretokenized"}, "prediction"} per example of this host
  (T5X's default fields), and its empty `.COMPLETED` marker."""
  by_task: dict[str, list[str]] = {}
  with open(predictions_path, encoding='utf-8') as f:
    for line in f:
      record = json.loads(line)
      inputs = {'inputs_pretokenized': record['input'], 'targets_pretokenized': record['target']}
      by_task.setdefault(record['task'], []).append(
          json.dumps({'inputs': inputs, 'prediction': record['prediction']}, ensure_ascii=False) + '\n')
  for task, lines in by_task.items():
    path = os.path.join(output_dir, f'{task}-predict.jsonl-{process_index:05d}-of-{process_count:05d}')
    checkpoints.write_text_atomically(path, ''.join(lines))
    checkpoints.write_text_atomically(path + '.COMPLETED', '')


def _remove_if_nothing_predicted(host_dir: str, created: list[str]) -> None:
  """A refused or failed job that wrote no prediction leaves nothing behind (its manifest would
  refuse the corrected command as 'a different job'); with predictions it stays, to resume."""
  if os.path.isdir(host_dir) and any(name.endswith('.done') for name in os.listdir(host_dir)):
    return
  for path in reversed(created):
    try:
      os.rmdir(path) if os.path.isdir(path) else os.remove(path)
    except OSError:
      pass  # not empty (someone else's files) or already gone: left as it is


def _predict_chunks(model, partitioner, decoding_config, params, fingerprint, output_dir, host_dir, rows,
                    num_chunks, chunk_size, rows_per_host, chunk_hashes, manifest, max_chunks, batch_size,
                    input_length, max_decode_length, seed, process_index, process_count) -> str | None:
  chunk_rows = lambda k: rows[k * chunk_size:(k + 1) * chunk_size]
  job_sha256 = _job_sha256(manifest)
  done_here = [int(chunk_done(host_dir, k, len(chunk_rows(k)))) for k in range(num_chunks)]
  # A chunk is skipped only when every host has finished it, so all hosts run the same chunks.
  done_everywhere = _all_hosts(done_here, np.min)
  todo = [k for k in range(num_chunks) if not done_everywhere[k]]
  print(f'[flan_t5x] host {process_index}/{process_count}: {len(rows)} inputs, {num_chunks} chunks, '
        f'{num_chunks - len(todo)} already done; checkpoint '
        f'{checkpoint_import.describe_checkpoint(fingerprint)}', flush=True)
  if todo:
    partitioner = partitioner or partitioning.PjitPartitioner()
    runner = inference.InferenceRunner(model, partitioner, decoding_config)
    if params is None:  # load what was fingerprinted, even if a MODEL_DIR has a newer step by now
      # The checkpoint this job's manifest names (a MODEL_DIR's newest when it started).
      resolved = fingerprint['resolved']
      params, _ = inference.unless_gone(
          resolved, 'Run the same command again (it reads the newest; finished chunks of this job are kept only '
          'if that is the same checkpoint), or give a checkpoint_<step> that is kept.',
          lambda: inference.load_params(model, partitioner, resolved))
    vocabulary = model.output_vocabulary
    if vocabulary is None:
      raise ValueError('The model has no output_vocabulary; the infer job needs one to (de)tokenize.')
    chunk_lengths = {k: min(chunk_size, rows_per_host - k * chunk_size) for k in todo}
    bar = progress.Progress(sum(list(chunk_lengths.values())[:max_chunks]), 'infer', 'input',
                            lines=process_index == 0, terminal=progress.on_terminal() and process_index == 0)
    for done_now, chunk in enumerate(todo):
      if max_chunks is not None and done_now >= max_chunks:
        bar.close()
        print(f'[flan_t5x] stopping after {max_chunks} chunks; run again to resume.', flush=True)
        return None
      chunk_length = chunk_lengths[chunk]
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), chunk)
      records, truncated = decode_rows(runner, params, vocabulary, _padded(chunk_rows(chunk), chunk_length),
                                       batch_size, input_length, max_decode_length, rng, bar)
      if done_here[chunk]:
        continue  # this host finished the chunk before a restart; its file stays as written
      if truncated:
        logging.warning('chunk %d: %d inputs truncated to %s tokens.', chunk, truncated, input_length)
      data_path, done_path = _chunk_paths(host_dir, chunk)
      checkpoints.write_text_atomically(data_path, ''.join(json.dumps(r, ensure_ascii=False) + '\n'
                                                           for r in records))
      checkpoints.write_text_atomically(done_path, json.dumps({
          'lines': len(records), 'truncated_inputs': truncated, 'inputs_sha256': chunk_hashes[chunk],
          'job_sha256': job_sha256}) + '\n')
      progress.say(f'[flan_t5x] chunk {chunk + 1}/{num_chunks} done')
    bar.close()
  return _join_chunks(output_dir, host_dir, num_chunks, process_index, process_count)


def _join_chunks(output_dir: str, host_dir: str, num_chunks: int, process_index: int,
                 process_count: int) -> str:
  parts = []
  for chunk in range(num_chunks):
    with open(_chunk_paths(host_dir, chunk)[0]) as f:
      parts.append(f.read())
  path = os.path.join(output_dir, f'predictions-{process_index:05d}-of-{process_count:05d}.jsonl')
  text = ''.join(parts)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:  # a finished job run again: nothing to rewrite
        print(f'[flan_t5x] {path} is complete', flush=True)
        return path
  checkpoints.write_text_atomically(path, text)
  print(f'[flan_t5x] wrote {path}', flush=True)
  return path

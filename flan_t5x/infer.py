r"""Batch inference: JSONL of raw inputs (or a SeqIO task split) -> JSONL predictions, resumable.

  python -m flan_t5x.infer --gin_file=gin/infer.gin --gin.CHECKPOINT_PATH="'runs/x'" \
      --gin.INFER_INPUT_PATH="'inputs.jsonl'" --gin.INFER_OUTPUT_DIR="'runs/infer'"

Each host (`jax.process_index()` of `jax.process_count()`) takes every
process_count-th input line. All hosts decode together on the global mesh, in
chunks of `chunk_size` of each host's lines: every host runs the same number of
chunks and batches (a host with fewer lines pads them with rows that are
dropped afterwards), so no collective waits on a host that has finished, and
each input line is decoded exactly once. A host's chunk is written atomically
as `host-<i>-of-<n>/chunk-<k>.jsonl`, then its completion marker
`chunk-<k>.done`; a restarted job skips the chunks every host has completed,
so a killed job resumes without duplicating or losing lines. When all chunks are done the host's lines are
joined into `predictions-<i>-of-<n>.jsonl` (also atomically). Output lines:
{"index": input line number, "input": ..., "prediction": ..., "score": ...}
(+ "target" for a task; + "predictions"/"scores" when num_decodes > 1).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from flan_t5x import checkpoints
from flan_t5x import decoding
from flan_t5x import evaluation
from flan_t5x import inference
from flan_t5x import models
from flan_t5x import partitioning

PyTree = Any
MANIFEST = 'manifest.json'


def read_jsonl_inputs(path: str, input_field: str) -> list[dict]:
  """[{'index', 'input'}] for each non-empty line; ValueError naming the line if the field is missing."""
  rows = []
  with open(path) as f:
    for line_number, line in enumerate(f):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as err:
        raise ValueError(f'{path}:{line_number + 1}: not valid JSON ({err}).') from None
      if not isinstance(record, dict) or not isinstance(record.get(input_field), str):
        raise ValueError(f'{path}:{line_number + 1}: expected an object with a string field '
                         f'{input_field!r} (INFER_INPUT_FIELD), got {line.strip()[:200]!r}.')
      rows.append({'index': line_number, 'input': record[input_field]})
  return rows


def read_task_inputs(mixture_or_task_name: str, split: str, max_examples: int | None) -> list[dict]:
  rows = []
  for task in evaluation.tasks_of(mixture_or_task_name):
    for example in evaluation.load_examples(task, split, max_examples):
      rows.append({'index': len(rows), 'input': example.input_text, 'target': example.target_text,
                   'task': task.name, 'tokens': example.inputs})
  return rows


def host_rows(rows: Sequence[dict], process_index: int, process_count: int) -> list[dict]:
  return [row for i, row in enumerate(rows) if i % process_count == process_index]


def _host_dir(output_dir: str, process_index: int, process_count: int) -> str:
  return os.path.join(output_dir, f'host-{process_index:05d}-of-{process_count:05d}')


def _check_manifest(host_dir: str, manifest: dict) -> None:
  path = os.path.join(host_dir, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous != manifest:
      raise ValueError(f'{host_dir} holds chunks of a different job ({previous}); expected {manifest}. '
                       'Use a new INFER_OUTPUT_DIR or delete the old one.')
  else:
    checkpoints.write_text_atomically(path, json.dumps(manifest, indent=2) + '\n')


def _chunk_paths(host_dir: str, chunk: int) -> tuple[str, str]:
  base = os.path.join(host_dir, f'chunk-{chunk:05d}')
  return base + '.jsonl', base + '.done'


def chunk_done(host_dir: str, chunk: int, expected_lines: int) -> bool:
  data_path, done_path = _chunk_paths(host_dir, chunk)
  if not (os.path.exists(done_path) and os.path.exists(data_path)):
    return False
  with open(data_path) as f:
    return sum(1 for _ in f) == expected_lines


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
                rng: jax.Array) -> tuple[list[dict], int]:
  """Prediction records for this host's `rows` (padding rows dropped) and the number of truncated inputs.

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
          params: PyTree = None, max_chunks: int | None = None) -> str | None:
  """Decodes this host's share of the inputs; returns its predictions file (None if stopped early).

  Every process calls it. Exactly one of `input_path` (JSONL, text in `input_field`) and
  `mixture_or_task_name`. `max_chunks` stops after that many new chunks (to bound a run;
  resuming continues). `params` overrides loading `checkpoint_path`.
  """
  if (input_path is None) == (mixture_or_task_name is None):
    raise ValueError('Give exactly one of INFER_INPUT_PATH (JSONL) and MIXTURE_OR_TASK_NAME.')
  if chunk_size < 1 or batch_size < 1:
    raise ValueError(f'chunk_size and batch_size must be positive, got {chunk_size}, {batch_size}.')
  process_index, process_count = jax.process_index(), jax.process_count()
  all_rows = (read_jsonl_inputs(input_path, input_field) if input_path
              else read_task_inputs(mixture_or_task_name, split, max_examples))
  rows = host_rows(all_rows, process_index, process_count)
  rows_per_host = -(-len(all_rows) // process_count)  # the most any host has
  output_dir = os.path.abspath(output_dir)
  host_dir = _host_dir(output_dir, process_index, process_count)
  _check_manifest(host_dir, {'input': os.path.abspath(input_path) if input_path else f'{mixture_or_task_name}/{split}',
                             'input_field': input_field, 'max_examples': max_examples, 'chunk_size': chunk_size,
                             'num_rows': len(rows), 'process_count': process_count})
  num_chunks = -(-rows_per_host // chunk_size)
  chunk_rows = lambda k: rows[k * chunk_size:(k + 1) * chunk_size]
  done_here = [int(chunk_done(host_dir, k, len(chunk_rows(k)))) for k in range(num_chunks)]
  # A chunk is skipped only when every host has finished it, so all hosts run the same chunks.
  done_everywhere = _all_hosts(done_here, np.min)
  todo = [k for k in range(num_chunks) if not done_everywhere[k]]
  print(f'[flan_t5x] host {process_index}/{process_count}: {len(rows)} inputs, {num_chunks} chunks, '
        f'{num_chunks - len(todo)} already done', flush=True)
  if todo:
    partitioner = partitioner or partitioning.PjitPartitioner()
    runner = inference.InferenceRunner(model, partitioner, decoding_config or decoding.DecodingConfig())
    if params is None:
      params, _ = inference.load_params(model, partitioner, checkpoint_path)
    vocabulary = model.output_vocabulary
    if vocabulary is None:
      raise ValueError('The model has no output_vocabulary; the infer job needs one to (de)tokenize.')
    for done_now, chunk in enumerate(todo):
      if max_chunks is not None and done_now >= max_chunks:
        print(f'[flan_t5x] stopping after {max_chunks} chunks; run again to resume.', flush=True)
        return None
      chunk_length = min(chunk_size, rows_per_host - chunk * chunk_size)
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), chunk)
      records, truncated = decode_rows(runner, params, vocabulary, _padded(chunk_rows(chunk), chunk_length),
                                       batch_size, input_length, max_decode_length, rng)
      if done_here[chunk]:
        continue  # this host finished the chunk before a restart; its file stays as written
      if truncated:
        logging.warning('chunk %d: %d inputs truncated to %s tokens.', chunk, truncated, input_length)
      data_path, done_path = _chunk_paths(host_dir, chunk)
      checkpoints.write_text_atomically(data_path, ''.join(json.dumps(r, ensure_ascii=False) + '\n'
                                                           for r in records))
      checkpoints.write_text_atomically(done_path, json.dumps({'lines': len(records),
                                                               'truncated_inputs': truncated}) + '\n')
      print(f'[flan_t5x] chunk {chunk + 1}/{num_chunks} done', flush=True)
  return _join_chunks(output_dir, host_dir, num_chunks, process_index, process_count)


def _join_chunks(output_dir: str, host_dir: str, num_chunks: int, process_index: int,
                 process_count: int) -> str:
  parts = []
  for chunk in range(num_chunks):
    with open(_chunk_paths(host_dir, chunk)[0]) as f:
      parts.append(f.read())
  path = os.path.join(output_dir, f'predictions-{process_index:05d}-of-{process_count:05d}.jsonl')
  checkpoints.write_text_atomically(path, ''.join(parts))
  print(f'[flan_t5x] wrote {path}', flush=True)
  return path


def main(argv: list[str]) -> None:
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.start_run('%INFER_OUTPUT_DIR', every_host=True)
  from flan_t5x import infer as infer_module  # pylint: disable=g-import-not-at-top  (gin binds this module)
  gin.get_configurable(infer_module.infer)()


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

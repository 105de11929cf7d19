r"""Batch inference: JSONL of raw inputs (or a SeqIO task split) -> JSONL predictions, resumable.

  python -m flan_t5x.infer --gin_file=gin/infer.gin --gin.CHECKPOINT_PATH="'runs/x'" \
      --gin.INFER_INPUT_PATH="'inputs.jsonl'" --gin.INFER_OUTPUT_DIR="'runs/infer'"

Each host (`jax.process_index()` of `jax.process_count()`) takes every
process_count-th input line and decodes them on its local devices, in chunks
of `chunk_size` lines. A chunk is written atomically as
`host-<i>-of-<n>/chunk-<k>.jsonl`, then its completion marker `chunk-<k>.done`;
a restarted job skips completed chunks, so a killed job resumes without
duplicating or losing lines. When all chunks are done the host's lines are
joined into `predictions-<i>-of-<n>.jsonl` (also atomically). Output lines:
{"index": input line number, "input": ..., "prediction": ..., "score": ...}
(+ "target" for a task; + "predictions"/"scores" when num_decodes > 1).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
from absl import logging

from flan_t5x import checkpoints
from flan_t5x import decoding
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
  from flan_t5x import eval as eval_lib  # pylint: disable=g-import-not-at-top
  rows = []
  for task in eval_lib.tasks_of(mixture_or_task_name):
    for example in eval_lib.load_examples(task, split, max_examples):
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


def decode_rows(runner: inference.InferenceRunner, params: PyTree, vocabulary, rows: Sequence[dict],
                batch_size: int, input_length: int | None, max_decode_length: int,
                rng: jax.Array) -> tuple[list[dict], int]:
  """Prediction records for `rows` and the number of truncated inputs."""
  token_lists = [row['tokens'] if 'tokens' in row else list(vocabulary.encode(row['input'])) + [decoding.EOS_ID]
                 for row in rows]
  length = input_length or inference.round_up(max(len(t) for t in token_lists), 32)
  fitted = [inference.fit_tokens(t, length) for t in token_lists]
  inputs_BxL = inference.pad_batch([t for t, _ in fitted], length)
  records = []
  for start in range(0, len(rows), batch_size):
    rng, batch_rng = jax.random.split(rng)
    tokens_BxKxT, scores_BxK = runner.predict(params, inputs_BxL[start:start + batch_size], max_decode_length,
                                              batch_rng)
    for row, tokens_KxT, scores_K in zip(rows[start:start + batch_size], tokens_BxKxT, scores_BxK):
      texts = [vocabulary.decode(decoding.strip_after_eos(t)) for t in tokens_KxT]
      record = {k: v for k, v in row.items() if k != 'tokens'}
      record.update(prediction=texts[0], score=float(scores_K[0]))
      if len(texts) > 1:
        record.update(predictions=texts, scores=[float(s) for s in scores_K])
      records.append(record)
  return records, sum(truncated for _, truncated in fitted)


def infer(*, model: models.EncoderDecoderModel, checkpoint_path: str, output_dir: str,
          input_path: str | None = None, input_field: str = 'inputs',
          mixture_or_task_name: str | None = None, split: str = 'validation', max_examples: int | None = None,
          chunk_size: int = 256, batch_size: int = 32, input_length: int | None = None,
          max_decode_length: int = 128, decoding_config: decoding.DecodingConfig | None = None,
          seed: int = 0, partitioner: partitioning.PjitPartitioner | None = None,
          params: PyTree = None, max_chunks: int | None = None) -> str | None:
  """Decodes this host's share of the inputs; returns its predictions file (None if stopped early).

  Exactly one of `input_path` (JSONL, text in `input_field`) and `mixture_or_task_name`.
  `max_chunks` stops after that many new chunks (to bound a run; resuming continues).
  `params` overrides loading `checkpoint_path`.
  """
  if (input_path is None) == (mixture_or_task_name is None):
    raise ValueError('Give exactly one of INFER_INPUT_PATH (JSONL) and MIXTURE_OR_TASK_NAME.')
  if chunk_size < 1 or batch_size < 1:
    raise ValueError(f'chunk_size and batch_size must be positive, got {chunk_size}, {batch_size}.')
  process_index, process_count = jax.process_index(), jax.process_count()
  rows = (read_jsonl_inputs(input_path, input_field) if input_path
          else read_task_inputs(mixture_or_task_name, split, max_examples))
  rows = host_rows(rows, process_index, process_count)
  output_dir = os.path.abspath(output_dir)
  host_dir = _host_dir(output_dir, process_index, process_count)
  _check_manifest(host_dir, {'input': os.path.abspath(input_path) if input_path else f'{mixture_or_task_name}/{split}',
                             'input_field': input_field, 'max_examples': max_examples, 'chunk_size': chunk_size,
                             'num_rows': len(rows), 'process_count': process_count})
  num_chunks = -(-len(rows) // chunk_size)
  todo = [k for k in range(num_chunks)
          if not chunk_done(host_dir, k, len(rows[k * chunk_size:(k + 1) * chunk_size]))]
  print(f'[flan_t5x] host {process_index}/{process_count}: {len(rows)} inputs, {num_chunks} chunks, '
        f'{num_chunks - len(todo)} already done', flush=True)
  if todo:
    # Hosts work independently on their own lines, so each decodes on its local devices.
    partitioner = partitioner or partitioning.PjitPartitioner(devices=jax.local_devices())
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
      chunk_rows = rows[chunk * chunk_size:(chunk + 1) * chunk_size]
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), chunk_rows[0]['index'])
      records, truncated = decode_rows(runner, params, vocabulary, chunk_rows, batch_size, input_length,
                                       max_decode_length, rng)
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
  gin_utils.start_run('%INFER_OUTPUT_DIR', f'config-{jax.process_index():05d}.gin', every_host=True)
  from flan_t5x import infer as infer_module  # pylint: disable=g-import-not-at-top  (gin binds this module)
  gin.get_configurable(infer_module.infer)()


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

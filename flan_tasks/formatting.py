"""Instruction formatting as SeqIO preprocessors: zero-shot and few-shot, with template metadata.

Both preprocessors turn a dataset of raw string fields into `inputs`/`targets` strings plus metadata
(`_task_name`, `_template_idx`, `_template_type`, `_num_shots`) so evaluation can break results down
by template. The template of an example is a keyed hash of its input fields: deterministic for a
seed, independent of pipeline order and sharding, and spread evenly over the templates.

Few-shot formatting is two steps so SeqIO can cache the first (registry._preprocessors):
`few_shot_blocks` needs only the example and its attached exemplars; `few_shot_fit` applies the
sequence length. `few_shot` runs both on a plain dataset, taking exemplars from the stream.
"""
from typing import Mapping, Optional, Sequence, Tuple

import seqio
import tensorflow as tf

from flan_tasks.templates import FewShotPattern, placeholders, split_template

OPTIONS_FIELD = "options_"
Template = Tuple[str, str]


def options_text(options: Sequence[str]) -> str:
  """The FLAN-style answer list appended to classification prompts."""
  return "OPTIONS:\n" + "\n".join(f"- {o}" for o in options)


def check_templates(task_name: str, templates: Sequence[Template], fields: Sequence[str],
                    has_options: bool) -> None:
  """Every placeholder of every template must be a field of the task; the error names both."""
  available = set(fields) | ({OPTIONS_FIELD} if has_options else set())
  for i, (inputs_template, targets_template) in enumerate(templates):
    for side, template in (("input", inputs_template), ("target", targets_template)):
      split_template(template)
      for field in placeholders(template):
        if field not in available:
          hint = (" (templates with {options_} need the task's `options`)"
                  if field == OPTIONS_FIELD else "")
          raise ValueError(
              f"task {task_name!r}: {side} template #{i} {template!r} uses field {{{field}}}, which the "
              f"task does not provide{hint}; task fields: {sorted(available)}")


def _fill(template: str, example: Mapping[str, tf.Tensor]) -> tf.Tensor:
  pieces = []
  for literal, field in split_template(template):
    if literal:
      pieces.append(literal)
    if field:
      pieces.append(example[field])
  return tf.strings.join(pieces) if pieces else tf.constant("")


def _format_selected(templates: Sequence[str], example, index: tf.Tensor) -> tf.Tensor:
  """Fills only the template at `index` (a switch, so the others cost nothing)."""
  return tf.switch_case(tf.cast(index, tf.int32),
                        [lambda t=t: _fill(t, example) for t in templates])


def _select(strings: Sequence[tf.Tensor], index: tf.Tensor) -> tf.Tensor:
  return tf.gather(tf.stack(strings), index)


def _choose_index(example: Mapping[str, tf.Tensor], key_fields: Sequence[str], count: int,
                  fixed: Optional[int], seed: int, salt: int) -> tf.Tensor:
  if fixed is not None:
    return tf.constant(fixed, tf.int64)
  key = tf.strings.reduce_join([example[f] for f in key_fields], separator="\x1f")
  return tf.strings.to_hash_bucket_strong(key, count, [seed, salt])


def _template_types(templates: Sequence[Template], prefix: str) -> tf.Tensor:
  return tf.constant([prefix + ("_opt" if OPTIONS_FIELD in placeholders(t[0]) else "")
                      for t in templates])


def _validate_fixed_index(template_idx, templates):
  if template_idx is not None and not 0 <= template_idx < len(templates):
    raise ValueError(f"template_idx {template_idx} out of range: {len(templates)} templates")


def _with_options(example, options: Optional[Sequence[str]]):
  if options:
    example = dict(example)
    example[OPTIONS_FIELD] = tf.constant(options_text(options))
  return example


def _key_fields(templates: Sequence[Template]) -> Sequence[str]:
  fields = sorted({f for t, _ in templates for f in placeholders(t) if f != OPTIONS_FIELD})
  return fields or sorted({f for _, t in templates for f in placeholders(t)})


def zero_shot(dataset: tf.data.Dataset, *, task_name: str, templates: Sequence[Template],
              template_idx: Optional[int] = None, seed: int = 0,
              options: Optional[Sequence[str]] = None) -> tf.data.Dataset:
  """Formats each example with one template (drawn per example, or `template_idx`)."""
  _validate_fixed_index(template_idx, templates)
  key_fields = _key_fields(templates)
  types = _template_types(templates, "zs")

  def fmt(example):
    example = _with_options(example, options)
    idx = _choose_index(example, key_fields, len(templates), template_idx, seed, salt=1)
    return {
        "inputs": _format_selected([t for t, _ in templates], example, idx),
        "targets": _format_selected([t for _, t in templates], example, idx),
        "_task_name": tf.constant(task_name),
        "_template_idx": tf.cast(idx, tf.int32),
        "_template_type": tf.gather(types, idx),
        "_num_shots": tf.constant(0, tf.int32),
    }

  return dataset.map(fmt, num_parallel_calls=tf.data.AUTOTUNE)


def _token_count(vocabulary: seqio.Vocabulary, strings: tf.Tensor) -> tf.Tensor:
  """Tokens in each string of a 1-D tensor (batched where the vocabulary allows it)."""
  if isinstance(vocabulary, seqio.ByteVocabulary):
    return tf.strings.length(strings, unit="BYTE")
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    return tf.cast(vocabulary.tf_tokenizer.tokenize(strings).row_lengths(), tf.int32)
  return tf.map_fn(lambda s: tf.size(vocabulary.encode_tf(s), out_type=tf.int32), strings,
                   fn_output_signature=tf.int32)


SHOTS_PREFIX = "_shots/"  # exemplar field f of an example is SHOTS_PREFIX + f: a [num_shots] vector
# Few-shot features made before SeqIO's cache placeholder and consumed after it.
_PROMPT, _PROMPT_TOKENS = "_fs_prompt", "_fs_prompt_tokens"
_BLOCKS, _BLOCK_TOKENS = "_fs_blocks", "_fs_block_tokens"


def _check_few_shot_args(task_name, num_shots, templates, template_idx, patterns, pattern_idx):
  if not 0 <= num_shots <= 5:
    raise ValueError(f"task {task_name!r}: num_shots must be in 0..5, got {num_shots}")
  _validate_fixed_index(template_idx, templates)
  if pattern_idx is not None and not 0 <= pattern_idx < len(patterns):
    raise ValueError(f"pattern_idx {pattern_idx} out of range: {len(patterns)} patterns")


def attach_next_examples(dataset: tf.data.Dataset, num_shots: int) -> tf.data.Dataset:
  """Adds `SHOTS_PREFIX + f`: the fields of the `num_shots` examples that follow in `dataset`.

  Example i gets examples i+1..i+num_shots of the stream (cycling), so they are the query's
  neighbours in whatever order the stream has. flan_tasks' sources attach exemplars by row index
  instead (sources.py), which does not depend on the order, sharding or shuffling of the split.
  """
  if not num_shots:
    return dataset
  streams = tuple(dataset.repeat().skip(j + 1) for j in range(num_shots))
  return tf.data.Dataset.zip((dataset, streams)).map(
      lambda query, shots: {**query, **{SHOTS_PREFIX + f: tf.stack([s[f] for s in shots])
                                        for f in query}})


def _split_shots(example):
  query = {k: v for k, v in example.items() if not k.startswith(SHOTS_PREFIX)}
  shots = {k[len(SHOTS_PREFIX):]: v for k, v in example.items() if k.startswith(SHOTS_PREFIX)}
  return query, shots


def few_shot_blocks(dataset: tf.data.Dataset,
                    output_features: Optional[Mapping[str, seqio.Feature]] = None, *,
                    task_name: str, templates: Sequence[Template],
                    patterns: Sequence[FewShotPattern], num_shots: int,
                    template_idx: Optional[int] = None, pattern_idx: Optional[int] = None,
                    seed: int = 0, options: Optional[Sequence[str]] = None) -> tf.data.Dataset:
  """The per-example part of few-shot formatting: no sequence length, no neighbouring examples.

  Each example must carry its exemplars (`SHOTS_PREFIX` fields, see `attach_next_examples`). It gets
  the query prompt, one text block per exemplar (in the query's template and pattern), their token
  counts (with `output_features`) and the targets and metadata. A function of the example alone,
  so it may run before SeqIO's CacheDatasetPlaceholder; `few_shot_fit` does the rest after it.
  """
  _check_few_shot_args(task_name, num_shots, templates, template_idx, patterns, pattern_idx)
  vocabulary = output_features["inputs"].vocabulary if output_features else None
  key_fields = _key_fields(templates)
  types = _template_types(templates, "fs")

  def fmt(example):
    query, shots = _split_shots(example)
    missing = sorted(set(query) - set(shots)) if num_shots else []
    if missing:
      raise ValueError(f"task {task_name!r}: examples carry no exemplars for field(s) {missing}")
    query, shots = _with_options(query, options), _with_options(shots, options)
    idx = _choose_index(query, key_fields, len(templates), template_idx, seed, salt=1)
    pidx = _choose_index(query, key_fields, len(patterns), pattern_idx, seed, salt=2)
    query_inputs = _format_selected([t for t, _ in templates], query, idx)

    def by_pattern(build):
      return _select([build(p) for p in patterns], pidx)

    out = {
        _PROMPT: by_pattern(lambda p: tf.strings.join(
            [p.inputs_prefix, query_inputs, p.x_y_delimiter, p.targets_prefix, p.final_suffix])),
        "targets": _format_selected([t for _, t in templates], query, idx),
        "_task_name": tf.constant(task_name),
        "_template_idx": tf.cast(idx, tf.int32),
        "_template_type": tf.gather(types, idx),
    }
    if num_shots:
      shot_inputs = _format_selected([t for t, _ in templates], shots, idx)
      shot_targets = _format_selected([t for _, t in templates], shots, idx)
      out[_BLOCKS] = by_pattern(lambda p: tf.strings.join(
          [p.inputs_prefix, shot_inputs, p.x_y_delimiter, p.targets_prefix, shot_targets,
           p.example_separator]))
    if vocabulary is not None:
      out[_PROMPT_TOKENS] = _token_count(vocabulary, out[_PROMPT][tf.newaxis])[0]
      if num_shots:
        out[_BLOCK_TOKENS] = _token_count(vocabulary, out[_BLOCKS])
    return out

  return dataset.map(fmt, num_parallel_calls=tf.data.AUTOTUNE)


def few_shot_fit(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]] = None, *,
                 num_shots: int, max_input_tokens: Optional[int] = None) -> tf.data.Dataset:
  """Joins the exemplars that fit the token budget in front of the prompt -> `inputs`, `_num_shots`.

  The budget is `max_input_tokens`, else the `inputs` sequence length (none: keep every exemplar);
  exemplars are dropped from the front, so the ones nearest the query stay.
  """
  budget = max_input_tokens or (sequence_length or {}).get("inputs")

  def fit(example):
    example = dict(example)
    prompt = example.pop(_PROMPT)
    prompt_tokens = example.pop(_PROMPT_TOKENS, None)
    blocks, block_tokens = example.pop(_BLOCKS, None), example.pop(_BLOCK_TOKENS, None)
    kept = tf.constant(num_shots, tf.int32)
    if num_shots and budget:
      if block_tokens is None:
        raise ValueError("few-shot formatting with a token budget needs the inputs vocabulary "
                         "(output_features) to count tokens")
      room = budget - prompt_tokens - 1  # +1 for the EOS appended after formatting
      used_from_end = tf.cumsum(block_tokens, reverse=True)
      kept = tf.reduce_sum(tf.cast(used_from_end <= room, tf.int32))
    if num_shots:
      prompt = tf.strings.join([tf.strings.reduce_join(blocks[num_shots - kept:]), prompt])
    return {**example, "inputs": prompt, "_num_shots": kept}

  return dataset.map(fit, num_parallel_calls=tf.data.AUTOTUNE)


def few_shot(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]] = None,
             output_features: Optional[Mapping[str, seqio.Feature]] = None, *, task_name: str,
             templates: Sequence[Template], patterns: Sequence[FewShotPattern], num_shots: int,
             template_idx: Optional[int] = None, pattern_idx: Optional[int] = None, seed: int = 0,
             options: Optional[Sequence[str]] = None,
             max_input_tokens: Optional[int] = None) -> tf.data.Dataset:
  """Prepends up to `num_shots` exemplars from the same split, all phrased with the query's template.

  Exemplars for the i-th example are the next `num_shots` examples of `dataset` (cycling), so they
  never include the query itself when the split has more than `num_shots` examples. Exemplars that
  would push the prompt past the token budget (`max_input_tokens`, else the task's `inputs` length)
  are dropped from the front; `_num_shots` records how many were kept. The tasks run the same steps
  with exemplars attached by the source and SeqIO's cache placeholder between them.
  """
  _check_few_shot_args(task_name, num_shots, templates, template_idx, patterns, pattern_idx)
  budget = max_input_tokens or (sequence_length or {}).get("inputs")
  dataset = few_shot_blocks(
      attach_next_examples(dataset, num_shots), output_features if budget else None,
      task_name=task_name, templates=templates, patterns=patterns, num_shots=num_shots,
      template_idx=template_idx, pattern_idx=pattern_idx, seed=seed, options=options)
  return few_shot_fit(dataset, sequence_length, num_shots=num_shots,
                      max_input_tokens=max_input_tokens)


METADATA_FEATURES = ("_task_name", "_template_idx", "_template_type", "_num_shots")


def zero_shot_preprocessor(**kwargs):
  # A closure of the dataset alone: seqio reads a `seed` parameter before its cache placeholder as
  # a random seed (and warns); here the seed only keys the template choice, fixed per example.
  def format_zero_shot(dataset):
    return zero_shot(dataset, **kwargs)
  format_zero_shot.__name__ = f"zero_shot_{kwargs.get('task_name', '')}"
  return format_zero_shot


def few_shot_preprocessors(*, num_shots: int, max_input_tokens: Optional[int] = None, **kwargs):
  """(before the cache placeholder, after it): the per-example blocks, then the fit to the length.

  The first needs each example's exemplars attached (flan_tasks' sources do it by row index).
  """
  def blocks(dataset, output_features=None):
    return few_shot_blocks(dataset, output_features, num_shots=num_shots, **kwargs)

  def fit(dataset, sequence_length=None):
    return few_shot_fit(dataset, sequence_length, num_shots=num_shots,
                        max_input_tokens=max_input_tokens)

  blocks.__name__ = f"few_shot_blocks_{kwargs.get('task_name', '')}"
  fit.__name__ = f"few_shot_fit_{kwargs.get('task_name', '')}"
  return blocks, fit

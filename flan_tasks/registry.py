"""Registers instruction tasks: one dataset x one template family -> `<name>_zs` and `<name>_fs` tasks.

Also keeps what the registry needs to know beyond SeqIO (family, variant, held-out group) so mixtures
and `flan_tasks.inspect` can select and describe tasks.
"""
import dataclasses
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import seqio
import tensorflow as tf

from flan_tasks import formatting, metrics as metrics_lib, readers, sources, templates as tmpl
from flan_tasks import vocab as vocab_lib


# The sources shuffle all of their rows (a full permutation, per seed), so the per-task buffer of
# formatted examples (SeqIO's default 1,000) only adds cross-epoch mixing; it is small because a
# training checkpoint stores every host's buffers (the engine's constant-time resume): 1,000
# few-shot examples of a dozen tasks made a 185 MB input state per host for flan_mix.
TASK_SHUFFLE_BUFFER = 128


@dataclasses.dataclass(frozen=True)
class FamilyDefaults:
  """What a template family's tasks need: their fields, metrics and postprocessor."""
  input_field: str
  target_field: str
  extra_fields: Tuple[str, ...]
  metrics: Tuple[str, ...]
  postprocess: Callable
  options: Optional[Tuple[str, ...]] = None


FAMILY_DEFAULTS: Dict[str, FamilyDefaults] = {
    "dialogue_summarization": FamilyDefaults("dialogue", "summary", (), ("rouge",),
                                             metrics_lib.strip_postprocessor),
    "dialogue_inversion": FamilyDefaults("summary", "dialogue", (), ("rouge",),
                                         metrics_lib.strip_postprocessor),
    "news_summarization": FamilyDefaults("document", "summary", (), ("rouge",),
                                         metrics_lib.strip_postprocessor),
    "review_rating": FamilyDefaults("review", "rating", (), ("rating",),
                                    metrics_lib.rating_postprocessor, ("1", "2", "3", "4", "5")),
    "code_translation": FamilyDefaults("source_code", "target_code", ("source_lang", "target_lang"),
                                       ("code",), metrics_lib.strip_postprocessor),
    "named_entity_recognition": FamilyDefaults("sentence", "entities", (), ("entity_f1",),
                                               metrics_lib.strip_postprocessor),
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  name: str
  dataset: str
  family: str
  variant: str  # "zs" or "fs"
  held_out: bool
  group: str  # "flan", "demo" or "user"
  templates: Tuple[Tuple[str, str], ...]
  options: Optional[Tuple[str, ...]] = None
  constant_fields: Tuple[Tuple[str, str], ...] = ()

  @property
  def num_templates(self) -> int:
    return len(self.templates)


_TASK_INFO: Dict[str, TaskInfo] = {}
_USER_SPECS: Dict[str, tuple] = {}


def task_info(name: str) -> TaskInfo:
  if name not in _TASK_INFO:
    raise ValueError(f"{name!r} is not a flan_tasks instruction task; known: {sorted(_TASK_INFO)}")
  return _TASK_INFO[name]


def all_task_info() -> List[TaskInfo]:
  return list(_TASK_INFO.values())


def output_features(vocabulary: seqio.Vocabulary) -> Dict[str, seqio.Feature]:
  return {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def _add_constants(constants: Mapping[str, str], num_exemplars: int):
  """Adds the task's constant fields to each example and to each of its exemplars."""
  def add(example):
    example = {**example, **{k: tf.constant(v) for k, v in constants.items()}}
    if num_exemplars:
      example.update({formatting.SHOTS_PREFIX + k: tf.fill([num_exemplars], v)
                      for k, v in constants.items()})
    return example
  return lambda dataset: dataset.map(add)


def _preprocessors(variant: str, formatters, head: Sequence[Callable]) -> List[Callable]:
  """The task's steps, with SeqIO's cache placeholder after the last one that is a function of
  one source row alone.

  Everything before `seqio.CacheDatasetPlaceholder` must be deterministic and independent of the
  sequence length: `python -m seqio.scripts.cache_tasks_main` runs it once (Apache Beam) and
  `use_cached=True` reads its output instead. Zero-shot formatting and tokenization are per row, so
  the cache holds token ids. Few-shot exemplars come with the row (the source attaches the next
  rows of the split by index, whatever the order or shard), so their text blocks and token counts
  are cached; which exemplars fit the `inputs` length is decided after the cache, and the prompt
  is tokenized then. Cached and uncached examples are therefore the same set.
  """
  cache = seqio.CacheDatasetPlaceholder()
  tokenize, eos = seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim
  if variant == "zs":
    return [*head, formatters[0], tokenize, cache, eos]
  blocks, fit = formatters
  return [*head, blocks, cache, fit, tokenize, eos]


def register_instruction_tasks(
    name: str,
    source: seqio.DataSource,
    family: str,
    *,
    vocabulary: seqio.Vocabulary,
    group: str,
    held_out: bool = False,
    templates: Optional[Sequence[Tuple[str, str]]] = None,
    metrics: Optional[Sequence[Union[str, Callable]]] = None,
    postprocess: Optional[Callable] = None,
    options: Optional[Sequence[str]] = None,
    constant_fields: Optional[Mapping[str, str]] = None,
    num_shots: int = 3,
    template_idx: Optional[int] = None,
    seed: int = 0,
) -> Tuple[str, str]:
  """Registers `<name>_zs` and `<name>_fs`; checks every template placeholder against the fields."""
  template_family = tmpl.get_family(family) if family in tmpl.family_names() else None
  defaults = FAMILY_DEFAULTS.get(family)
  if templates is None:
    if template_family is None:
      raise ValueError(f"task {name!r}: unknown family {family!r} and no templates given; families: "
                       f"{tmpl.family_names()}")
    templates = template_family.templates
  templates = tuple(tuple(t) for t in templates)
  patterns = template_family.few_shot_patterns if template_family else tmpl.DEFAULT_FEW_SHOT_PATTERNS
  if options is None and defaults is not None:
    options = defaults.options
  constant_fields = dict(constant_fields or {})
  fields = tuple(source.fields) + tuple(constant_fields)
  formatting.check_templates(name, templates, fields, has_options=bool(options))
  metric_fns = metrics_lib.resolve_metrics(
      metrics if metrics is not None else (defaults.metrics if defaults else ("rouge",)))
  postprocess = postprocess or (defaults.postprocess if defaults else
                                metrics_lib.strip_postprocessor)
  if not hasattr(source, "with_exemplars"):
    raise TypeError(f"task {name!r}: the source must be a flan_tasks source (sources.py: "
                    f"InstructionDataSource or GeneratedDataSource), got {type(source).__name__}")
  features = output_features(vocabulary)
  zs_name, fs_name = f"{name}_zs", f"{name}_fs"
  common = dict(templates=templates, template_idx=template_idx, seed=seed, options=options)
  variants = (
      (zs_name, "zs", source, (formatting.zero_shot_preprocessor(task_name=zs_name, **common),), 0),
      (fs_name, "fs", source.with_exemplars(num_shots), formatting.few_shot_preprocessors(
          task_name=fs_name, patterns=patterns, num_shots=num_shots, **common), num_shots),
  )
  for task_name, variant, task_source, formatters, num_exemplars in variants:
    head = [_add_constants(constant_fields, num_exemplars)] if constant_fields else []
    if task_name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(task_name)
    seqio.TaskRegistry.add(
        task_name, source=task_source, preprocessors=_preprocessors(variant, formatters, head),
        output_features=features, postprocess_fn=postprocess, metric_fns=metric_fns,
        shuffle_buffer_size=TASK_SHUFFLE_BUFFER)
    _TASK_INFO[task_name] = TaskInfo(task_name, name, family, variant, held_out, group, templates,
                                     tuple(options) if options else None,
                                     tuple(sorted(constant_fields.items())))
  return zs_name, fs_name


# -- the user's own files ----------------------------------------------------------------------------
_READERS = {
    ".jsonl": sources.per_file(readers.read_jsonl),
    ".json": sources.per_file(readers.read_json_array),
    ".csv": sources.per_file(lambda p: readers.read_delimited(p, ",")),
    ".tsv": sources.per_file(lambda p: readers.read_delimited(p, "\t")),
}


def _reader_for(paths: Sequence[str], file_format: Optional[str]):
  exts = {os.path.splitext(p)[1].lower() for p in paths}
  key = f".{file_format.lstrip('.')}" if file_format else (exts.pop() if len(exts) == 1 else None)
  if key not in _READERS:
    raise ValueError(f"cannot tell the format of {list(paths)}: give file_format as one of "
                     f"{sorted(k[1:] for k in _READERS)}")
  return _READERS[key]


def _field_mapper(field_map: Mapping[str, str]):
  """Row -> {task field: str(value)} with an error naming the file, line and missing column."""
  def to_fields(row: readers.Row) -> Dict[str, str]:
    out = {}
    for task_field, column in field_map.items():
      value = row.values.get(column)
      if value is None or (isinstance(value, str) and not value.strip()):
        raise readers.BadRowError(row.path, row.line, f"field {column!r} is missing or empty "
                                  f"(columns present: {sorted(row.values)})")
      if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise readers.BadRowError(row.path, row.line, f"field {column!r}: expected a string (or a number), "
                                  f"got {type(value).__name__} {value!r:.60}")
      out[task_field] = value if isinstance(value, str) else str(value)
    return out
  return to_fields


def add_instruction_task(
    name: str,
    source_files: Union[str, Sequence[str], Mapping[str, Union[str, Sequence[str]]]],
    input_field: str,
    target_field: str,
    family: Optional[str] = None,
    templates: Optional[Sequence[Tuple[str, str]]] = None,
    metrics: Optional[Sequence[Union[str, Callable]]] = None,
    *,
    file_format: Optional[str] = None,
    constant_fields: Optional[Mapping[str, str]] = None,
    options: Optional[Sequence[str]] = None,
    num_shots: int = 3,
    template_idx: Optional[int] = None,
    seed: int = 0,
    skip_bad_rows: bool = False,
    vocabulary: Optional[seqio.Vocabulary] = None,
) -> str:
  """Registers the user's JSONL/JSON/CSV/TSV data as `<name>_zs` and `<name>_fs`; returns `<name>_zs`.

  `source_files` is a path (the train split), a list of paths, or {split: path(s)}. With a `family`,
  its templates are used and `input_field`/`target_field` (the file's columns) fill the family's
  placeholders (e.g. {dialogue}/{summary}); with `templates`, placeholders name the file's columns.
  Calling it again with the same arguments is a no-op; with different ones it re-registers.
  """
  if (family is None) == (templates is None):
    raise ValueError(f"add_instruction_task({name!r}): give exactly one of `family` or `templates`")
  if isinstance(source_files, (str, os.PathLike)):
    source_files = {"train": [source_files]}
  elif not isinstance(source_files, Mapping):
    source_files = {"train": list(source_files)}
  split_files = {split: tuple(os.path.abspath(os.fspath(p)) for p in
                              ([paths] if isinstance(paths, (str, os.PathLike)) else paths))
                 for split, paths in source_files.items()}
  spec_key = (tuple(sorted(split_files.items())), input_field, target_field, family,
              tuple(map(tuple, templates or ())), tuple(map(str, metrics or ())), file_format,
              tuple(sorted((constant_fields or {}).items())), tuple(options or ()), num_shots,
              template_idx, seed, skip_bad_rows, id(vocabulary))
  if _USER_SPECS.get(name) == spec_key:
    return f"{name}_zs"
  if family is not None:
    if family not in FAMILY_DEFAULTS:
      raise ValueError(f"add_instruction_task({name!r}): unknown family {family!r}; families: "
                       f"{sorted(FAMILY_DEFAULTS)}")
    defaults = FAMILY_DEFAULTS[family]
    field_map = {defaults.input_field: input_field, defaults.target_field: target_field}
  else:
    field_map = {input_field: input_field, target_field: target_field}
  for split, paths in split_files.items():
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(f"add_instruction_task({name!r}): {split} file(s) not found: {missing}")
  reader = _reader_for([p for ps in split_files.values() for p in ps], file_format)
  source = sources.InstructionDataSource(
      name, fields=tuple(field_map),
      files=sources.FileSpec(folder=name, split_files=split_files, read=reader,
                             to_fields=_field_mapper(field_map)),
      skip_bad_rows=skip_bad_rows)
  register_instruction_tasks(
      name, source, family or "custom", vocabulary=vocabulary or vocab_lib.t5_vocabulary(),
      group="user", templates=templates, metrics=metrics, options=options,
      constant_fields=constant_fields, num_shots=num_shots, template_idx=template_idx, seed=seed)
  _USER_SPECS[name] = spec_key
  return f"{name}_zs"

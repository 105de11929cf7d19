"""The Flan Collection (Flan 2022) from its exported shards: tasks, the Flan 2022 mixture, held-out checks.

    import flan_tasks
    flan_tasks.add_flan_collection("/data/flan_collection")      # -> "flan2022"

registers, from a directory (local or gs://) of the collection's Parquet / JSONL shards:

- one SeqIO task per submix x template style, `flan2022_<submix>_<style>` (e.g. `flan2022_niv2_zsopt`),
  the unit FLAN's own code mixes (`flan/v2/mixtures.py`: `niv2_zsopt`, `t0_fsnoopt`, ...). Each
  streams its files lazily and applies the submix's per-task example cap as a per-row keep
  probability min(n, cap) / n, so the Flan tasks inside it are examples-proportional with that cap;
  registering 14 streams instead of 1,800 tasks keeps the input pipeline (and the input position a
  checkpoint stores) small;
- one SeqIO task per Flan task name, `flan2022_task_<name>` (all its template styles, uncapped, with
  metrics where its category has one), for inspecting, evaluating or mixing a single task;
- the mixture `flan2022`: submix weights flan2021 0.4, t0 0.32, niv2 0.2, cot 0.05, dialog 0.03,
  template styles in equal shares within a submix (zsopt/zsnoopt/fsopt/fsnoopt for flan2021 and t0,
  zsopt/fsopt for the others), as in FLAN's `run_example.py`. It mixes the streams' raw rows and
  tokenizes them in one pipeline (CollectionMixture), not one pipeline per stream.

Tasks can be excluded by name (or glob), category or submix, or by naming held-out tasks/mixtures
whose datasets must not be trained on; `check_no_leak` verifies any training mixture against a
held-out set. Registering indexes the shards (reads only the task / template-type columns), cached
next to them or in `cache_dir`; no data is read at import.
"""
import dataclasses
import fnmatch
import functools
import hashlib
import json
import logging
import os
import random
import re
import csv
import io
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
import seqio
import tensorflow as tf

from flan_tasks import config, metrics as metrics_lib, registry, shards, vocab as vocab_lib
from flan_tasks.readers import BadRowError

logger = logging.getLogger(__name__)

SUBMIXES = ("flan2021", "t0", "niv2", "cot", "dialog")
# flan/v2/run_example.py: flan2022_submix.
FLAN2022_WEIGHTS = {"flan2021": 0.4, "t0": 0.32, "niv2": 0.2, "cot": 0.05, "dialog": 0.03}
# flan/v2/mixtures.py: DEFAULT_MIXTURE_MAX_EXAMPLES (per task and template style).
FLAN2022_CAPS = {"flan2021": 30_000, "t0": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
# Template styles in flan_tasks' `_template_type` names (zs = zero-shot without options, ...).
STYLES = ("zs_opt", "zs", "fs_opt", "fs")
STYLE_SUFFIX = {"zs_opt": "zsopt", "zs": "zsnoopt", "fs_opt": "fsopt", "fs": "fsnoopt"}
# run_example.py mixes these styles equally within a submix (CoT, NIv2, Dialog have no NoOpt).
FLAN2022_STYLES = {"flan2021": STYLES, "t0": STYLES, "niv2": ("zs_opt", "fs_opt"),
                   "cot": ("zs_opt", "fs_opt"), "dialog": ("zs_opt", "fs_opt")}
_RAW_STYLES = {"zsopt": "zs_opt", "zsnoopt": "zs", "fsopt": "fs_opt", "fsnoopt": "fs"}
SUBMIX_ALIASES = {"flan": "flan2021", "flan2021": "flan2021", "t0": "t0", "niv2": "niv2",
                  "cot": "cot", "dialog": "dialog"}
COLLECTION_DIR_ENV = config.COLLECTION_DIR_ENV


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a dump's files are and what their columns are called.

  `path_pattern` is a regex over a file's path relative to the collection directory with a named
  group `submix` and, where the folder says it, `style` (else the `template_type` column does).
  """
  name: str
  path_pattern: str
  columns: shards.Columns


LAYOUTS = {
    # FLAN's export as published by Enrico Shippole (conceptofmind/*_submix_original, also
    # DataProvenanceInitiative/*_submix_original): one dataset per submix, all styles in it.
    "submix_original": Layout(
        "submix_original",
        r"^(?P<submix>[A-Za-z0-9]+)_submix_original/(?:.*/)?[^/]+\.(?:parquet|jsonl)$",
        shards.Columns("inputs", "targets", "task_name", "template_type", None)),
    # Open-Orca/FLAN: one folder per submix x style, FLAN's passthrough feature names as columns.
    "open_orca": Layout(
        "open_orca",
        r"^(?P<submix>flan|t0|niv2|cot|dialog)_(?P<style>zsopt|zsnoopt|fsopt|fsnoopt)_data/"
        r"(?:.*/)?[^/]+\.(?:parquet|jsonl)$",
        shards.Columns("inputs", "targets", "_task_name", None, "_template_idx")),
}


class HeldOutLeakError(ValueError):
  """A training mixture contains a held-out task or dataset."""


def normalize_style(value, path: str, row: int) -> str:
  key = str(value).lower().replace("_", "").replace("-", "")
  if key not in _RAW_STYLES:
    raise BadRowError(path, row, f"template type {value!r} is not one of zs_opt, zs_noopt, fs_opt, "
                      "fs_noopt (in any spelling without separators)")
  return _RAW_STYLES[key]


def slug(text: str) -> str:
  return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()


# -- finding and indexing the files ------------------------------------------------------------------
@dataclasses.dataclass
class Collection:
  """The indexed files of one collection directory."""
  root: str
  layout: Layout
  shards: List[shards.ShardIndex]
  submix: List[str]  # per shard
  style: List[Optional[str]]  # per shard, when the folder says it

  def counts(self) -> Dict[Tuple[str, str, str], int]:
    """{(submix, task, style): rows}."""
    out: Dict[Tuple[str, str, str], int] = {}
    for index, submix in zip(self.shards, self.submix):
      for (task, style), n in index.counts.items():
        out[(submix, task, style)] = out.get((submix, task, style), 0) + n
    return out


def _list_files(root: str) -> List[str]:
  found = []
  for directory, _, files in tf.io.gfile.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      found.append(os.path.relpath(path, root) if not root.startswith("gs://") else
                   path[len(root.rstrip("/")) + 1:])
  return sorted(found)


def _match_layout(root: str, files: Sequence[str], layout: Union[str, Layout]) -> Tuple[Layout, list]:
  candidates = [layout] if isinstance(layout, Layout) else (
      list(LAYOUTS.values()) if layout == "auto" else [_layout_named(layout)])
  for candidate in candidates:
    pattern = re.compile(candidate.path_pattern)
    matched = [(f, m) for f in files if (m := pattern.match(f))]
    if matched:
      return candidate, matched
  shown = ", ".join(files[:5]) or "no files"
  raise FileNotFoundError(
      f"{root}: no Flan Collection shards in layout(s) {[c.name for c in candidates]} (found: "
      f"{shown}{', ...' if len(files) > 5 else ''}). Expected e.g. "
      "`niv2_submix_original/data/train-00000-of-00004.parquet` (submix_original) or "
      "`niv2_zsopt_data/part.0.parquet` (open_orca); see docs/data.md")


def _layout_named(name: str) -> Layout:
  if name not in LAYOUTS:
    raise ValueError(f"unknown collection layout {name!r}; layouts: {sorted(LAYOUTS)} or 'auto', "
                     "or a flan_tasks.flan_collection.Layout")
  return LAYOUTS[name]


def _cache_path(cache_dir: str, root: str, layout: Layout, entries: Sequence[tuple],
                chunk_rows: int) -> str:
  key = json.dumps([root, dataclasses.asdict(layout), list(entries), chunk_rows], sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return os.path.join(cache_dir, f"flan_collection_index_{digest}.json")


def index_collection(root: str, layout: Union[str, Layout] = "auto",
                     cache_dir: Optional[str] = None,
                     chunk_rows: int = shards.DEFAULT_CHUNK_ROWS) -> Collection:
  """Finds the shards under `root` and indexes them (or loads the index cached for these files)."""
  if not tf.io.gfile.isdir(root):
    raise FileNotFoundError(f"Flan Collection directory {root!r} does not exist (set "
                            f"${COLLECTION_DIR_ENV} or pass collection_dir=...; see docs/data.md)")
  layout, matched = _match_layout(root, _list_files(root), layout)
  entries, submixes, styles = [], [], []
  for rel, match in matched:
    raw_submix = match.group("submix").lower()
    if raw_submix not in SUBMIX_ALIASES:
      raise ValueError(f"{os.path.join(root, rel)}: unknown submix {raw_submix!r}; expected one of "
                       f"{sorted(SUBMIX_ALIASES)}")
    submixes.append(SUBMIX_ALIASES[raw_submix])
    style = match.groupdict().get("style")
    styles.append(_RAW_STYLES[style] if style else None)
    stat = tf.io.gfile.stat(os.path.join(root, rel))
    entries.append((rel, stat.length, int(stat.mtime_nsec)))
  cache_dir = cache_dir or os.path.join(root, ".flan_tasks_index")
  cache = _cache_path(cache_dir, root, layout, entries, chunk_rows)
  if tf.io.gfile.exists(cache):
    with tf.io.gfile.GFile(cache) as f:
      indexes = [shards.ShardIndex.from_json(v) for v in json.load(f)]
  else:
    indexes = []
    for (rel, _, _), style in zip(entries, styles):
      indexes.append(shards.index_shard(os.path.join(root, rel), layout.columns, style,
                                        normalize_style, chunk_rows))
    _write_cache(cache, [i.to_json() for i in indexes])
  return Collection(root, layout, indexes, submixes, styles)


def _write_cache(path: str, value) -> None:
  """Atomically (write + rename); an unwritable location only costs re-indexing next time."""
  try:
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = f"{path}.tmp{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(value, f)
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except (tf.errors.OpError, OSError) as e:
    logger.warning("could not cache the Flan Collection index at %s (%s); it is rebuilt next time",
                   path, e)


# -- categories --------------------------------------------------------------------------------------
def load_categories(source: Union[None, str, Mapping[str, Union[str, Sequence[str]]]],
                    key_column: str = "Dataset",
                    category_column: str = "Generic Task Category") -> Dict[str, Set[str]]:
  """{dataset or task name: categories} from a mapping or a CSV (FLAN's flan_collection_info.csv
  columns by default)."""
  if source is None:
    return {}
  if isinstance(source, Mapping):
    return {k: {v} if isinstance(v, str) else set(v) for k, v in source.items()}
  with tf.io.gfile.GFile(source) as f:
    reader = csv.DictReader(io.StringIO(f.read()))
    missing = [c for c in (key_column, category_column) if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{source}: missing column(s) {missing}; header: {reader.fieldnames}")
    out: Dict[str, Set[str]] = {}
    for line, row in enumerate(reader, start=2):
      if not row[key_column] or not row[category_column]:
        raise BadRowError(source, line, f"empty {key_column!r} or {category_column!r}")
      out.setdefault(row[key_column], set()).add(row[category_column])
  return out


def categories_of(task: str, categories: Mapping[str, Set[str]]) -> Set[str]:
  """A task's categories: by its exact name, else by the longest dataset name it starts with."""
  if task in categories:
    return set(categories[task])
  by_slug: Dict[str, Set[str]] = {}
  for key, value in categories.items():
    by_slug.setdefault(slug(key), set()).update(value)
  words = slug(task).split("_")
  for end in range(len(words), 0, -1):  # the longest dataset name the task's name starts with
    prefix = "_".join(words[:end])
    if prefix in by_slug:
      return set(by_slug[prefix])
  return set()


def metrics_for(categories: Set[str]) -> Tuple[str, ...]:
  text = " ".join(categories).lower()
  if "summarization" in text:
    return ("rouge",)
  if "translation" in text:
    return ("bleu",)
  return ("exact_match",) if categories else ()


# -- held-out tasks ----------------------------------------------------------------------------------
def _matches(name: str, patterns: Iterable[str]) -> bool:
  return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(slug(name), p) for p in patterns)


def _same_dataset(a: str, b: str) -> bool:
  """Whether dataset identifiers name the same data: equal, or one's words inside the other's
  (`xsum` in NIv2's `task1290_xsum_summarization`)."""
  sa, sb = slug(a), slug(b)
  if not sa or not sb:
    return False
  return sa == sb or f"_{sa}_" in f"_{sb}_" or f"_{sb}_" in f"_{sa}_"


# {seqio task name: the Flan task names it can emit} for the collection's tasks.
_EMITS: Dict[str, Set[str]] = {}


def datasets_of(name: str) -> Set[str]:
  """The dataset identifiers a task or mixture (recursively) trains or evaluates on."""
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    # Every listed member, with data here or not: a held-out set is about datasets, not files.
    tasks = getattr(provider, "listed_tasks", None) or seqio.get_subtasks(provider)
  else:
    tasks = [provider]
  out: Set[str] = set()
  for task in tasks:
    if task.name in _EMITS:
      out |= _EMITS[task.name]
      continue
    try:
      out.add(registry.task_info(task.name).dataset)
    except ValueError:
      out.add(task.name)
  return out


def check_no_leak(training: str, held_out: Sequence[str]) -> None:
  """Raises HeldOutLeakError when `training` (task or mixture) contains a dataset of `held_out`."""
  held = {d: h for h in held_out for d in datasets_of(h)}
  leaks = sorted({(t, d, held[d]) for t in datasets_of(training) for d in held
                  if _same_dataset(t, d)})
  if leaks:
    detail = "; ".join(f"{t!r} (held out as {d!r} by {h!r})" for t, d, h in leaks[:20])
    raise HeldOutLeakError(f"training mixture {training!r} contains held-out data: {detail}"
                           f"{' ...' if len(leaks) > 20 else ''}")


# -- SeqIO source and tasks -------------------------------------------------------------------------
class CollectionSource(seqio.DataSource):
  """Rows of some of a collection's files, kept with per-(task, style) probabilities."""

  def __init__(self, name: str, collection: Collection, shard_ids: Sequence[int],
               keep: Mapping[Tuple[str, str], float], submix_of_task: Mapping[str, str],
               expected_examples: int):
    self._name, self._collection = name, collection
    self._shard_ids = list(shard_ids)
    self._keep = dict(keep)
    self._submix_of_task = dict(submix_of_task)
    self._expected = int(expected_examples)
    super().__init__(splits=("train",))

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False  # split by file

  def list_shards(self, split: str) -> Sequence[str]:
    return [self._collection.shards[i].path for i in self._shard_ids]

  def num_input_examples(self, split: str) -> int:
    """Examples in one epoch (expected: capped tasks keep each row with probability cap / n)."""
    return self._expected

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1,
                  features: Optional[Sequence[str]] = None) -> tf.data.Dataset:
    """`features`: the fields to read (default: all of shards.FEATURES)."""
    del sequence_length, use_cached, num_epochs  # handled by the Task
    if split != "train":
      raise ValueError(f"{self._name}: the Flan Collection's shards are the train split; got {split!r}")
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    collection = self._collection
    ds = shards.stream(
        [collection.shards[i] for i in self._shard_ids], collection.layout.columns,
        shards.KeepPlan(self._keep, normalize_style), seed=seed, shuffle=shuffle,
        shard_index=shard_info.index if shard_info else 0,
        num_shards=shard_info.num_shards if shard_info else 1,
        fixed_styles=[collection.style[i] for i in self._shard_ids],
        submix_of=self._submix_of_task.get, num_shots_of=_num_shots, features=features)
    return ds

  def __repr__(self):
    return f"CollectionSource({self._name!r}, files={len(self._shard_ids)})"


class _MixedSource(seqio.DataSource):
  """Rows of several collection streams, mixed row by row at fixed rates (before tokenization).

  Each stream repeats `num_epochs` times (None: forever); like SeqIO's mixtures, the mix ends
  when a stream ends.
  """

  def __init__(self, sources: Sequence[CollectionSource], rates: Sequence[float],
               num_epochs: Optional[int], features: Sequence[str]):
    self._sources, self._num_epochs, self._features = list(sources), num_epochs, list(features)
    total = sum(rates)
    self._log_rates = [float(np.log(r / total)) for r in rates]
    super().__init__(splits=("train",))

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False  # each stream splits by file (or by row when it has fewer files than hosts)

  def list_shards(self, split: str) -> Sequence[str]:
    return sorted({f for s in self._sources for f in s.list_shards(split)})

  def num_input_examples(self, split: str) -> int:
    return sum(s.num_input_examples(split) for s in self._sources)

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    if seed is None:  # as SeqIO's mixtures: a fixed mix without shuffling, a fresh one with it
      seed = random.SystemRandom().randrange(2**31) if shuffle else 42
    streams = []
    for source in self._sources:
      if shard_info and len(source.list_shards(split)) < shard_info.num_shards:
        ds = source.get_dataset(split, shuffle, seed, features=self._features).shard(
            shard_info.num_shards, shard_info.index)
      else:
        ds = source.get_dataset(split, shuffle, seed, shard_info, features=self._features)
      streams.append(ds.repeat(self._num_epochs))
    # Which stream gives each row: drawn 1,024 rows at a time from the rates (a few tf.data ops
    # per 1,024 rows instead of per row).
    log_rates = tf.constant([self._log_rates], tf.float32)
    choices = tf.data.Dataset.random(seed=seed).map(
        lambda s: tf.random.stateless_categorical(
            log_rates, _CHOICE_BATCH, seed=tf.stack([s, tf.constant(seed, tf.int64)]))[0]).unbatch()
    return tf.data.Dataset.choose_from_datasets(streams, choices, stop_on_empty_dataset=True)


_CHOICE_BATCH = 1024


class CollectionMixture(seqio.Mixture):
  """The collection's streams at their rates, mixed as raw rows and then tokenized once.

  A SeqIO mixture of the stream tasks (rates, `tasks`, sub-mixture use elsewhere as usual), whose
  own `get_dataset` mixes the streams' rows before the (shared) preprocessing instead of running
  one tokenization pipeline per stream and mixing tokenized examples: the same examples at the
  same rates, for the cost of a single task (bench/collection_pipeline.py).
  """

  def get_dataset(self, sequence_length=None, split: str = "train", use_cached: bool = False,
                  shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, num_epochs: Optional[int] = None,
                  copy_pretokenized: bool = False, compute_stats_empirically: bool = False,
                  log_mixing_proportions: bool = True,
                  passthrough_features: Optional[Sequence[str]] = None,
                  trim_output_features: bool = True,
                  try_in_mem_cache: bool = True) -> tf.data.Dataset:
    del use_cached, compute_stats_empirically, log_mixing_proportions, try_in_mem_cache
    tasks = self.tasks
    if split != "train":
      raise ValueError(f"{self.name}: the Flan Collection's shards are the train split; got {split!r}")
    # Only the features this mixture returns are read and carried (as SeqIO's mixtures return
    # the output features and `passthrough_features`), so no per-row filtering is needed.
    features = set(self.output_features) | set(passthrough_features or ())
    pretokenized = {f"{k}_pretokenized" for k in self.output_features}
    if copy_pretokenized:
      features |= pretokenized
    copies = bool(features & pretokenized)  # tokenizing copies all the texts or none
    rows = seqio.Task(
        f"{self.name}_rows", _MixedSource([t.source for t in tasks],
                                          [self.get_rate(t) for t in tasks], num_epochs, features),
        output_features=self.output_features, preprocessors=_preprocessors(copies),
        shuffle_buffer_size=registry.TASK_SHUFFLE_BUFFER)
    ds = rows.get_dataset(sequence_length, split=split, shuffle=shuffle, seed=seed,
                          shard_info=shard_info, num_epochs=1,
                          trim_output_features=trim_output_features, try_in_mem_cache=False)
    if copies and not pretokenized <= features:
      ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k in features})
    return ds


def _num_shots(style: str) -> int:
  # The dumps do not record how many exemplars a few-shot prompt has: -1 means unknown.
  return 0 if style.startswith("zs") else -1


def _preprocessors(copy_pretokenized: bool = True) -> list:
  """Every collection task's preprocessing (the mixture's single pipeline too)."""
  return [functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=copy_pretokenized),
          seqio.preprocessors.append_eos_after_trim]


def _add_task(name: str, source: CollectionSource, vocabulary, metrics: Sequence[str] = ()):
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=_preprocessors(),
      output_features=registry.output_features(vocabulary),
      postprocess_fn=metrics_lib.strip_postprocessor,
      metric_fns=metrics_lib.resolve_metrics(metrics) if metrics else [],
      shuffle_buffer_size=registry.TASK_SHUFFLE_BUFFER)


@dataclasses.dataclass
class CollectionInfo:
  """What `add_flan_collection` registered, for `describe` / `flan_tasks.inspect`."""
  name: str
  collection: Collection
  rates: Dict[str, float]  # stream task -> mixture rate
  stream_of: Dict[Tuple[str, str], str]  # (submix, style) -> stream task
  kept: Dict[Tuple[str, str, str], float]  # (submix, task, style) -> expected examples per epoch
  counts: Dict[Tuple[str, str, str], int]
  excluded: List[str]
  task_names: Dict[str, str]  # Flan task -> its own SeqIO task
  categories: Dict[str, Set[str]]


_MIXTURES: Dict[str, CollectionInfo] = {}


def registered(name: str) -> Optional[CollectionInfo]:
  return _MIXTURES.get(name)


def _excluded_tasks(counts, categories, exclude_tasks, exclude_categories, exclude_submixes,
                    held_out) -> Dict[str, str]:
  """{Flan task: why it is excluded}."""
  held = {d: h for h in held_out for d in datasets_of(h)}
  why = {}
  for submix, task, _ in counts:
    if submix in exclude_submixes:
      why[task] = f"submix {submix}"
    elif _matches(task, exclude_tasks):
      why[task] = "by name"
    elif exclude_categories and (cats := categories_of(task, categories)) and any(
        _matches(c, exclude_categories) or c.lower() in {e.lower() for e in exclude_categories}
        for c in cats):
      why[task] = f"category {sorted(cats)}"
    else:
      for dataset, owner in held.items():
        if _same_dataset(task, dataset):
          why[task] = f"held out: {dataset!r} in {owner!r}"
          break
  return why


def add_flan_collection(
    collection_dir: Optional[str] = None,
    name: str = "flan2022",
    *,
    layout: Union[str, Layout] = "auto",
    columns: Optional[Mapping[str, Optional[str]]] = None,
    weights: Optional[Mapping[str, float]] = None,
    caps: Optional[Mapping[str, int]] = None,
    styles: Optional[Mapping[str, Sequence[str]]] = None,
    exclude_tasks: Sequence[str] = (),
    exclude_categories: Sequence[str] = (),
    exclude_submixes: Sequence[str] = (),
    held_out: Sequence[str] = (),
    categories: Union[None, str, Mapping[str, Union[str, Sequence[str]]]] = None,
    cache_dir: Optional[str] = None,
    chunk_rows: int = shards.DEFAULT_CHUNK_ROWS,
    vocabulary: Optional[seqio.Vocabulary] = None,
) -> str:
  """Registers the collection's tasks and the Flan 2022 mixture `name`; returns `name`.

  `collection_dir` defaults to configure(collection_dir=...) / $FLAN_COLLECTION_DIR. `layout` is
  'auto', 'submix_original', 'open_orca' or a Layout; `columns` overrides column names
  ({'inputs', 'targets', 'task', 'template_type', 'template_idx'}: name or None). `weights`
  (replaces FLAN2022_WEIGHTS: submixes not in it are left out), `caps` and `styles` (update
  FLAN2022_CAPS / FLAN2022_STYLES per submix) default to Flan 2022's.
  Excluded tasks (by glob on the name, category, submix, or any dataset of the `held_out` tasks or
  mixtures) are never read into the mixture; the result is checked with `check_no_leak`.
  `categories` is {dataset or task: category} or a CSV (FLAN's flan_collection_info.csv).
  """
  root = collection_dir or config.collection_dir()
  if not root:
    raise ValueError(f"add_flan_collection: give collection_dir or set ${COLLECTION_DIR_ENV} (or "
                     "flan_tasks.configure(collection_dir=...)); see docs/data.md")
  if columns:
    layout = _layout_named(layout) if isinstance(layout, str) and layout != "auto" else layout
    if isinstance(layout, str):
      raise ValueError("add_flan_collection: give a layout name with `columns`")
    layout = dataclasses.replace(layout, columns=dataclasses.replace(layout.columns, **columns))
  weights = dict(FLAN2022_WEIGHTS if weights is None else weights)
  caps = {**FLAN2022_CAPS, **(caps or {})}
  styles = {k: tuple(v) for k, v in {**FLAN2022_STYLES, **(styles or {})}.items()}
  for label, table in (("weights", weights), ("caps", caps), ("styles", styles)):
    unknown = sorted(set(table) - set(SUBMIXES))
    if unknown:
      raise ValueError(f"add_flan_collection: {label} for unknown submix(es) {unknown}; submixes: "
                       f"{list(SUBMIXES)}")
  for submix, names in styles.items():
    bad = [s for s in names if s not in STYLES]
    if bad:
      raise ValueError(f"add_flan_collection: styles[{submix!r}] has {bad}; styles: {list(STYLES)}")
  collection = index_collection(root, layout, cache_dir, chunk_rows)
  counts = collection.counts()
  category_map = load_categories(categories)
  if exclude_categories and not category_map:
    raise ValueError("add_flan_collection: exclude_categories needs `categories` (a mapping or "
                     "FLAN's flan_collection_info.csv)")
  excluded = _excluded_tasks(counts, category_map, exclude_tasks, exclude_categories,
                             set(exclude_submixes), held_out)
  vocabulary = vocabulary or vocab_lib.t5_vocabulary()
  info = _register(name, collection, counts, excluded, weights, caps, styles, category_map,
                   vocabulary)
  if held_out:
    check_no_leak(name, held_out)
  logger.info("%s: %d Flan tasks in %d files, %d excluded; streams %s", name,
              len({t for _, t, _ in counts}), len(collection.shards), len(excluded),
              sorted(info.rates))
  return name


def _register(name, collection, counts, excluded, weights, caps, styles, category_map,
              vocabulary) -> CollectionInfo:
  submix_of_task = {task: submix for submix, task, _ in counts}
  files_of: Dict[Tuple[str, str], Set[int]] = {}
  task_files: Dict[str, Set[int]] = {}
  for i, (index, submix) in enumerate(zip(collection.shards, collection.submix)):
    for task, style in index.counts:
      files_of.setdefault((submix, style), set()).add(i)
      task_files.setdefault(task, set()).add(i)
  kept, rates, stream_of = {}, {}, {}
  for submix in SUBMIXES:
    if weights.get(submix, 0.0) <= 0.0:
      continue
    plans = {}
    for style in styles.get(submix, ()):
      keep = {(task, s): min(n, caps[submix]) / n for (m, task, s), n in counts.items()
              if m == submix and s == style and task not in excluded}
      if keep:
        plans[style] = keep
    for style, keep in plans.items():  # the submix's weight, split over its styles with data
      for (task, _), q in keep.items():
        kept[(submix, task, style)] = counts[(submix, task, style)] * q
      stream = f"{name}_{submix}_{STYLE_SUFFIX[style]}"
      expected = round(sum(counts[(submix, t, style)] * q for (t, _), q in keep.items()))
      source = CollectionSource(stream, collection, sorted(files_of[(submix, style)]), keep,
                                submix_of_task, expected)
      _add_task(stream, source, vocabulary)
      _EMITS[stream] = {t for t, _ in keep}
      rates[stream] = weights[submix] / len(plans)
      stream_of[(submix, style)] = stream
  if not rates:
    raise ValueError(f"{name}: no examples left in {collection.root} after exclusions "
                     f"({len(excluded)} tasks excluded)")
  missing = sorted(set(s for s, w in weights.items() if w > 0) - {m for m, _ in stream_of})
  if missing:
    logger.warning("%s: no data for submix(es) %s in %s; the others keep their relative weights",
                   name, missing, collection.root)
  task_names = _register_task_per_name(name, collection, counts, task_files, submix_of_task,
                                       category_map, vocabulary)
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, sorted(rates.items()), mixture_cls=CollectionMixture)
  info = CollectionInfo(name, collection, rates, stream_of, kept, counts,
                           sorted(excluded), task_names, category_map)
  _MIXTURES[name] = info
  return info


def _register_task_per_name(name, collection, counts, task_files, submix_of_task, category_map,
                            vocabulary) -> Dict[str, str]:
  per_task: Dict[str, int] = {}
  styles_of: Dict[str, Set[str]] = {}
  for (_, task, style), n in counts.items():
    per_task[task] = per_task.get(task, 0) + n
    styles_of.setdefault(task, set()).add(style)
  names: Dict[str, str] = {}
  taken = set()
  for task in sorted(per_task):
    task_name = f"{name}_task_{slug(task)}"
    if task_name in taken:  # names equal after slugging: tell them apart by submix
      task_name = f"{task_name}_{submix_of_task[task]}"
    taken.add(task_name)
    keep = {(task, style): 1.0 for style in styles_of[task]}
    source = CollectionSource(task_name, collection, sorted(task_files[task]), keep,
                              submix_of_task, per_task[task])
    _add_task(task_name, source, vocabulary, metrics_for(categories_of(task, category_map)))
    _EMITS[task_name] = {task}
    names[task] = task_name
  return names


def add_weighted_mixture(name: str, members: Mapping[str, float],
                         held_out: Sequence[str] = ()) -> str:
  """Registers a mixture of tasks and mixtures at the given weights (e.g. {'flan2022': 0.9,
  'support_chats_zs': 0.1}), checked against `held_out` tasks/mixtures; returns `name`."""
  if not members:
    raise ValueError(f"mixture {name!r}: no members given")
  for member, weight in members.items():
    if member not in seqio.TaskRegistry.names() and member not in seqio.MixtureRegistry.names():
      raise ValueError(f"mixture {name!r}: unknown task or mixture {member!r}")
    if not weight > 0:
      raise ValueError(f"mixture {name!r}: weight of {member!r} must be positive, got {weight}")
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, sorted(members.items()))
  if held_out:
    try:
      check_no_leak(name, held_out)
    except HeldOutLeakError:
      seqio.MixtureRegistry.remove(name)
      raise
  return name


# -- describing ---------------------------------------------------------------------------------------
def describe(name: str, top: int = 15) -> str:
  """Per-submix, per-style and per-task rates and counts of a registered collection mixture."""
  info = _MIXTURES[name]
  total_rate = sum(info.rates.values())
  out = [f"-- {name}: {len({t for _, t, _ in info.counts})} Flan tasks in "
         f"{len(info.collection.shards)} files ({info.collection.layout.name} layout), "
         f"{sum(info.counts.values()):,} rows; {len(info.excluded)} tasks excluded"]
  out.append(f"{'submix':10s} {'share':>7s} {'rows':>12s} {'per epoch':>12s} {'tasks':>6s}")
  for submix in SUBMIXES:
    share = sum(r for (m, _), s in info.stream_of.items() if m == submix
                for r in [info.rates[s]]) / total_rate
    rows = sum(n for (m, _, _), n in info.counts.items() if m == submix)
    kept = sum(n for (m, _, _), n in info.kept.items() if m == submix)
    tasks = len({t for (m, t, _) in info.kept if m == submix})
    if rows:
      out.append(f"{submix:10s} {100 * share:6.2f}% {rows:12,d} {kept:12,.0f} {tasks:6d}")
  out.append(f"\n{'stream task':34s} {'rate share':>10s} {'per epoch':>12s}")
  for stream, rate in sorted(info.rates.items()):
    source = seqio.get_mixture_or_task(stream).source
    out.append(f"{stream:34s} {100 * rate / total_rate:9.2f}% {source.num_input_examples('train'):12,d}")
  share_of = {}
  for (submix, task, style), n in info.kept.items():
    stream = info.stream_of[(submix, style)]
    stream_total = sum(v for (m, _, s), v in info.kept.items() if m == submix and s == style)
    share_of[task] = share_of.get(task, 0.0) + info.rates[stream] / total_rate * n / stream_total
  out.append(f"\n{'Flan task (top ' + str(top) + ' by share)':48s} {'share':>8s} {'rows':>10s} "
             f"{'per epoch':>10s}")
  for task, share in sorted(share_of.items(), key=lambda kv: -kv[1])[:top]:
    rows = sum(n for (_, t, _), n in info.counts.items() if t == task)
    kept = sum(n for (_, t, _), n in info.kept.items() if t == task)
    out.append(f"{task[:48]:48s} {100 * share:7.3f}% {rows:10,d} {kept:10,.0f}")
  if info.excluded:
    out.append(f"excluded: {', '.join(info.excluded[:top])}{' ...' if len(info.excluded) > top else ''}")
  return "\n".join(out)

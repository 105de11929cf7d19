"""SeqIO data sources: local files from the data directory (or given paths), with TFDS as a fallback.

Files are parsed in Python (so an error names the file and line), held in memory, and served as a
`tf.data.Dataset` of string fields. The data directory is resolved when a dataset is built, not when
the task is registered, so `flan_tasks.configure(data_dir=...)` after import still takes effect.
"""
import copy
import dataclasses
import logging
import os
import random
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import seqio
import tensorflow as tf

from flan_tasks import config, formatting
from flan_tasks.readers import BadRowError, Row

logger = logging.getLogger(__name__)

Reader = Callable[[Sequence[str]], Iterator[Row]]
# Returns the task's fields, or None when the dataset's documented filter drops the row.
FieldMapper = Callable[[Row], Optional[Dict[str, str]]]


class DataNotFoundError(FileNotFoundError):
  """Raised when a dataset has neither local files nor a prepared TFDS copy; says how to provide it."""


@dataclasses.dataclass(frozen=True)
class FileSpec:
  """Local files of one dataset.

  `split_files` paths are relative to `<data_dir>/<folder>/` unless absolute (user files).
  """
  folder: str
  split_files: Mapping[str, Tuple[str, ...]]
  read: Reader
  to_fields: FieldMapper
  filter_rule: str = ""  # what a None from to_fields means, for the log line


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """A TFDS dataset and how its examples map to the task's fields (a function of a TF example dict)."""
  name: str
  split_map: Mapping[str, str]
  to_fields: Callable[[Mapping[str, tf.Tensor], Any], Dict[str, tf.Tensor]]  # (example, tfds DatasetInfo)


def per_file(read_one: Callable[[str], Iterator[Row]]) -> Reader:
  """Lifts a one-file reader to a reader of the split's files, in order."""
  def read(paths):
    for path in paths:
      yield from read_one(path)
  return read

_ROW_CACHE: Dict[tuple, Dict[str, List[str]]] = {}


def _load_columns(paths: Sequence[str], spec: FileSpec, fields: Sequence[str],
                  skip_bad_rows: bool, label: str) -> Dict[str, List[str]]:
  # Size with mtime: a file rewritten within one mtime tick (coarse on some filesystems) is re-read.
  key = (tuple(paths), tuple((os.path.getmtime(p), os.path.getsize(p)) for p in paths), skip_bad_rows, id(spec))
  if key in _ROW_CACHE:
    return _ROW_CACHE[key]
  columns: Dict[str, List[str]] = {f: [] for f in fields}
  bad, filtered = 0, 0
  for row in spec.read(paths):
    try:
      values = spec.to_fields(row.check())
      if values is not None:
        missing = [f for f in fields if f not in values]
        if missing:
          raise BadRowError(row.path, row.line, f"missing field(s) {missing}")
    except BadRowError as e:
      if not skip_bad_rows:
        raise
      bad += 1
      if bad <= 3:
        logger.warning("%s: skipping bad row: %s", label, e)
      continue
    if values is None:
      filtered += 1
      continue
    for f in fields:
      columns[f].append(values[f])
  if filtered:
    logger.info("%s: dropped %d rows (%s)", label, filtered, spec.filter_rule or "dataset filter")
  if bad:
    logger.warning("%s: skipped %d bad rows (skip_bad_rows=True)", label, bad)
  if not columns[fields[0]]:
    raise ValueError(f"{label}: no examples in {list(paths)}")
  _ROW_CACHE[key] = columns
  return columns


def _columns_dataset(columns: Mapping[str, List[str]], fields: Sequence[str],
                     shard_info: Optional[seqio.ShardInfo], shuffle: bool,
                     seed: Optional[int], num_exemplars: int = 0) -> tf.data.Dataset:
  tensors = {f: tf.constant(columns[f], tf.string) for f in fields}
  num_rows = len(columns[fields[0]])
  shards, shard = (shard_info.num_shards, shard_info.index) if shard_info else (1, 0)
  # This shard holds rows shard, shard + shards, ...: positions 0..n-1 of it, shuffled or in order.
  positions = len(range(shard, num_rows, shards))
  ds = _shuffled_rows(positions, seed) if shuffle else tf.data.Dataset.range(positions)
  ds = ds.map(lambda p: p * shards + shard)
  # Row i's exemplars are rows i+1..i+k of the whole split (cycling), by index: the same for any
  # order, shard or shuffle, so a few-shot example is a function of its row (SeqIO's cache).
  offsets = tf.range(1, num_exemplars + 1, dtype=tf.int64)

  def row(i):
    example = {f: tf.gather(t, i) for f, t in tensors.items()}
    if num_exemplars:
      neighbours = (i + offsets) % num_rows
      example.update({formatting.SHOTS_PREFIX + f: tf.gather(t, neighbours)
                      for f, t in tensors.items()})
    return example
  return ds.map(row, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


_SHUFFLE_BLOCK = 64


def _shuffled_rows(num_rows: int, seed: Optional[int]) -> tf.data.Dataset:
  """Row indices in a random order that changes every epoch, with little tf.data state.

  A training checkpoint stores the input iterator's state (the engine's constant-time resume),
  and a tf.data shuffle buffer over every row costs about 200 bytes a row there, once per
  few-shot exemplar stream. So tf.data shuffles only the order of blocks of 64 rows (reshuffled
  each epoch) and a stateless keyed permutation orders the rows inside each block.
  """
  seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
  num_blocks = -(-num_rows // _SHUFFLE_BLOCK)

  def rows_of(block):
    size = tf.minimum(tf.constant(_SHUFFLE_BLOCK, tf.int64), num_rows - block * _SHUFFLE_BLOCK)
    order = tf.random.experimental.index_shuffle(
        tf.range(size), seed=tf.stack([tf.constant(seed, tf.int64), block]), max_index=size - 1)
    return tf.data.Dataset.from_tensor_slices(block * _SHUFFLE_BLOCK + order)
  return tf.data.Dataset.range(num_blocks).shuffle(num_blocks, seed=seed).flat_map(rows_of)


class _FieldsSource(seqio.DataSource):
  """A source of named string fields that shards anywhere (examples are held in memory)."""

  def __init__(self, name: str, fields: Sequence[str], splits: Sequence[str]):
    self._name, self._fields = name, tuple(fields)
    self._num_exemplars = 0
    super().__init__(splits=splits)

  def with_exemplars(self, num_exemplars: int) -> "_FieldsSource":
    """This source (same rows, shared caches) whose examples also carry the fields of the next
    `num_exemplars` rows of the split as `formatting.SHOTS_PREFIX + field` ([num_exemplars])."""
    if num_exemplars < 0:
      raise ValueError(f"dataset {self._name!r}: num_exemplars must be >= 0, got {num_exemplars}")
    source = copy.copy(self)
    source._num_exemplars = num_exemplars  # pylint: disable=protected-access
    return source

  @property
  def fields(self) -> Tuple[str, ...]:
    return self._fields

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def __repr__(self):
    return f"{type(self).__name__}({self._name!r}, fields={self._fields})"


class GeneratedDataSource(_FieldsSource):
  """Examples made by a function of the split (the built-in demo data): no files, no downloads."""

  def __init__(self, name: str, fields: Sequence[str],
               generate: Callable[[str], Dict[str, List[str]]], splits: Sequence[str]):
    self._generate = generate
    self._cache: Dict[str, Dict[str, List[str]]] = {}
    super().__init__(name, fields, splits)

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def load_columns(self, split: str) -> Dict[str, List[str]]:
    if split not in self.splits:
      raise ValueError(f"dataset {self._name!r} has no split {split!r}; splits: {list(self.splits)}")
    if split not in self._cache:
      self._cache[split] = self._generate(split)
    return self._cache[split]

  def num_input_examples(self, split: str) -> int:
    return len(self.load_columns(split)[self._fields[0]])

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # handled by the Task
    return _columns_dataset(self.load_columns(split), self._fields, shard_info, shuffle, seed,
                            self._num_exemplars)


class InstructionDataSource(_FieldsSource):
  """Serves a dataset's string fields from local files, else from TFDS, else a DataNotFoundError."""

  def __init__(self, name: str, fields: Sequence[str], files: Optional[FileSpec] = None,
               tfds_spec: Optional[TfdsSpec] = None, skip_bad_rows: bool = False):
    if files is None and tfds_spec is None:
      raise ValueError(f"dataset {name!r}: give local files, a TFDS name, or both")
    splits = set(files.split_files) if files else set()
    if tfds_spec:
      splits |= set(tfds_spec.split_map)
    self._files = files
    self._tfds = tfds_spec
    self._skip_bad_rows = skip_bad_rows
    super().__init__(name, fields, sorted(splits))

  # -- locating the data ----------------------------------------------------------------------------
  def local_paths(self, split: str) -> Optional[List[str]]:
    """Absolute paths of the split's files when they all exist, else None."""
    if not self._files or split not in self._files.split_files:
      return None
    paths = []
    for rel in self._files.split_files[split]:
      if os.path.isabs(rel):
        path = rel
      else:
        base = config.data_dir()
        if not base:
          return None
        path = os.path.join(base, self._files.folder, rel)
      if not os.path.exists(path):
        return None
      paths.append(path)
    return paths

  def _tfds_builder(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    data_dir = config.tfds_data_dir() or tfds.core.constants.DATA_DIR
    if not tf.io.gfile.exists(os.path.join(data_dir, self._tfds.name.split("/")[0].split(":")[0])):
      return None  # not prepared here (and TFDS's probe would log a note about a folder that does not exist)
    try:
      builder = tfds.builder(self._tfds.name, data_dir=config.tfds_data_dir())
    except Exception:  # pylint: disable=broad-except
      return None
    return builder if builder.is_prepared() else None

  def available(self, split: str) -> bool:
    if split not in self.splits:
      return False
    if self.local_paths(split) is not None:
      return True
    return bool(self._tfds and split in self._tfds.split_map and self._tfds_builder() is not None)

  def _not_found(self, split: str) -> DataNotFoundError:
    lines = [f"Dataset {self._name!r} (split {split!r}) is not available. Provide it one of these ways:"]
    if self._files and split in self._files.split_files:
      rels = self._files.split_files[split]
      if all(os.path.isabs(r) for r in rels):
        lines.append(f"  - the file(s) {list(rels)} must exist")
      else:
        lines.append(
            f"  - local files: set ${config.DATA_DIR_ENV} (or flan_tasks.configure(data_dir=...)) to a "
            f"directory holding {', '.join(os.path.join(self._files.folder, r) for r in rels)} "
            f"(now: {config.data_dir() or 'not set'}); see docs/data.md")
    if self._tfds and split in self._tfds.split_map:
      lines.append(
          f"  - TFDS: prepare {self._tfds.name!r} (e.g. `tfds build {self._tfds.name.split('/')[0]} "
          f"--data_dir=DIR --manual_dir=DIR_WITH_DOWNLOADS`) and set ${config.TFDS_DATA_DIR_ENV} "
          f"(or flan_tasks.configure(tfds_data_dir=...)) to DIR (now: "
          f"{config.tfds_data_dir() or 'TFDS default'})")
    return DataNotFoundError("\n".join(lines))

  # -- seqio.DataSource ----------------------------------------------------------------------------
  def load_columns(self, split: str) -> Dict[str, List[str]]:
    paths = self.local_paths(split)
    if paths is None:
      raise self._not_found(split)
    return _load_columns(paths, self._files, self._fields, self._skip_bad_rows,
                         f"{self._name}/{split}")

  def list_shards(self, split: str) -> Sequence[str]:
    return self.local_paths(split) or [split]

  def num_input_examples(self, split: str) -> Optional[int]:
    if self.local_paths(split) is not None:
      return len(self.load_columns(split)[self._fields[0]])
    builder = self._tfds_builder() if self._tfds and split in self._tfds.split_map else None
    if builder is not None:
      return builder.info.splits[self._tfds.split_map[split]].num_examples
    raise self._not_found(split)

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # handled by the Task
    if split not in self.splits:
      raise ValueError(f"dataset {self._name!r} has no split {split!r}; splits: {list(self.splits)}")
    if self.local_paths(split) is not None:
      return _columns_dataset(self.load_columns(split), self._fields, shard_info, shuffle, seed,
                            self._num_exemplars)
    builder = self._tfds_builder() if self._tfds and split in self._tfds.split_map else None
    if builder is None:
      raise self._not_found(split)
    # With exemplars the files are read in order, so each row's neighbours (its exemplars) are
    # those of the unshuffled split whatever the sharding; the shuffle buffer below mixes rows.
    ds = builder.as_dataset(split=self._tfds.split_map[split],
                            shuffle_files=shuffle and not self._num_exemplars,
                            read_config=_tfds_read_config(seed))
    info = builder.info
    if self._num_exemplars:
      ds = ds.map(lambda ex: self._tfds.to_fields(ex, info))
      ds = formatting.attach_next_examples(ds, self._num_exemplars)
    if shard_info and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    if not self._num_exemplars:
      ds = ds.map(lambda ex: self._tfds.to_fields(ex, info), num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
      ds = ds.shuffle(10_000, seed=seed)
    return ds


def missing_data_error(source: seqio.DataSource, split: str) -> Exception:
  if isinstance(source, InstructionDataSource):
    return source._not_found(split)  # pylint: disable=protected-access
  return DataNotFoundError(f"{source!r} cannot provide split {split!r}")


def _tfds_read_config(seed):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.ReadConfig(shuffle_seed=seed)

"""Lazy reading of large sharded example dumps (Parquet, JSONL) as a resumable tf.data stream.

A shard is indexed once (row counts, chunk boundaries, per-(task, template type) counts, reading
only the metadata columns) and read later one chunk at a time: at most a few chunks per stream are
in memory, whatever the size of the collection. The order is a keyed, stateless permutation of a
host's chunks and of the rows inside each chunk, redrawn every epoch, so the tf.data iterator state
a training checkpoint stores is a handful of integers per stream (a restored iterator reads its
open chunks again), not a shuffle buffer.

Which rows an epoch keeps is decided per row by a keyed hash against a keep probability given per
(task, template type): that is how per-task example caps, template-style shares and excluded tasks
are applied without reading anything twice.

A chunk is read by one Python call that does the whole chunk's work in numpy and Arrow (keep
draws, the keyed order, selecting the kept rows' texts): tf.data then only slices the result.
"""
import collections
import dataclasses
import json
import threading
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from flan_tasks.readers import BadRowError

PARQUET, JSONL = "parquet", "jsonl"
FORMATS = {".parquet": PARQUET, ".jsonl": JSONL}
# Rows read at once. A Parquet row group larger than this is read once and sliced from a cache.
DEFAULT_CHUNK_ROWS = 1024
# Chunks read concurrently by one stream: consecutive rows come from this many chunks, drawn in a
# random order inside each chunk. Memory per stream is about this many chunks (or row groups).
CYCLE_LENGTH = 4
# What a stream's rows hold, and their types.
FEATURES = {"inputs": tf.string, "targets": tf.string, "_task_name": tf.string,
            "_template_type": tf.string, "_template_idx": tf.int32, "_task_source": tf.string,
            "_num_shots": tf.int32}
# Parquet files a stream keeps open (chunks come from all of a host's files in a random order).
OPEN_FILES = 16
# Salts the hash that orders a chunk's rows, so the order is independent of the keep draws.
_ORDER_SALT = np.uint64(0x6A09E667F3BCC908)


@dataclasses.dataclass(frozen=True)
class Columns:
  """Column names of a dump. `task`/`template_type` may be None when the folder says them."""
  inputs: str = "inputs"
  targets: str = "targets"
  task: str = "task_name"
  template_type: Optional[str] = "template_type"
  template_idx: Optional[str] = None

  def metadata(self) -> List[str]:
    return [c for c in (self.task, self.template_type) if c]

  def all(self) -> List[str]:
    return [c for c in (self.inputs, self.targets, self.task, self.template_type,
                        self.template_idx) if c]


@dataclasses.dataclass(frozen=True)
class ShardIndex:
  """One file: its format, where its chunks start and how many rows each (task, type) has.

  `chunks` are (locator, num_rows): a Parquet (row group, offset in the group) or a JSONL byte
  offset (second item 0). `counts` maps (task name, template type) -> rows.
  """
  path: str
  file_format: str
  num_rows: int
  chunks: Tuple[Tuple[Tuple[int, int], int], ...]
  counts: Mapping[Tuple[str, str], int]

  def to_json(self) -> dict:
    return {"path": self.path, "format": self.file_format, "num_rows": self.num_rows,
            "chunks": [[list(loc), n] for loc, n in self.chunks],
            "counts": [[t, s, n] for (t, s), n in sorted(self.counts.items())]}

  @classmethod
  def from_json(cls, value: dict) -> "ShardIndex":
    return cls(value["path"], value["format"], value["num_rows"],
               tuple((tuple(loc), n) for loc, n in value["chunks"]),
               {(t, s): n for t, s, n in value["counts"]})


def file_format(path: str) -> str:
  for ext, fmt in FORMATS.items():
    if path.endswith(ext):
      return fmt
  raise ValueError(f"{path}: unsupported shard format; expected one of {sorted(FORMATS)} "
                   "(decompress .jsonl.gz files first: a compressed file cannot be read by chunk)")


def index_shard(path: str, columns: Columns, fixed_style: Optional[str] = None,
                normalize_style: Callable[[str, str, int], str] = lambda v, p, r: v,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ShardIndex:
  """Reads a shard's metadata columns (task, template type) only and counts its rows.

  `fixed_style` is the template type of every row when the folder names it (no column needed);
  `normalize_style(value, path, row)` maps a column value to a template type or raises.
  """
  fmt = file_format(path)
  index = _index_parquet if fmt == PARQUET else _index_jsonl
  return index(path, columns, fixed_style, normalize_style, chunk_rows)


def _open(path: str, mode: str = "rb"):
  return tf.io.gfile.GFile(path, mode)


def _parquet_file(path: str):
  """A pyarrow ParquetFile of a local path or a URI (gs://, s3://: pyarrow's own filesystems)."""
  import pyarrow.fs  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  if "://" in path:
    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path)
    return pq.ParquetFile(filesystem.open_input_file(inner))
  return pq.ParquetFile(path)


def _index_parquet(path, columns, fixed_style, normalize_style, chunk_rows) -> ShardIndex:
  parquet = _parquet_file(path)
  names = set(parquet.schema_arrow.names)
  wanted = [columns.inputs, columns.targets] + columns.metadata()
  missing = [c for c in wanted if c not in names]
  if missing:
    raise BadRowError(path, 0, f"missing column(s) {missing}; the file has {sorted(names)} "
                      "(set the collection's column names to match)")
  counts: Dict[Tuple[str, str], int] = collections.Counter()
  chunks, row = [], 0
  for group in range(parquet.num_row_groups):
    table = parquet.read_row_group(group, columns=columns.metadata())
    # Counted per distinct (task, type) pair: a row group has few of them and many rows.
    pairs = table.group_by(columns.metadata()).aggregate([([], "count_all")]).to_pylist()
    for pair in pairs:
      task = pair[columns.task]
      if not task:
        raise BadRowError(path, row, f"row group {group}: column {columns.task!r} has empty values")
      style = fixed_style if fixed_style is not None else normalize_style(
          pair[columns.template_type], path, row)
      counts[(task, style)] += pair["count_all"]
    for start in range(0, table.num_rows, chunk_rows):
      chunks.append(((group, start), min(chunk_rows, table.num_rows - start)))
    row += table.num_rows
  return ShardIndex(path, PARQUET, row, tuple(chunks), dict(counts))


def _index_jsonl(path, columns, fixed_style, normalize_style, chunk_rows) -> ShardIndex:
  counts: Dict[Tuple[str, str], int] = collections.Counter()
  chunks, offset, rows, line_no = [], 0, 0, 0
  with _open(path) as f:
    for raw in f:
      line_no += 1
      if raw.strip():
        value = _parse_json_line(raw, path, line_no, columns)
        style = fixed_style if fixed_style is not None else normalize_style(
            value[columns.template_type], path, line_no)
        counts[(value[columns.task], style)] += 1
        if rows % chunk_rows == 0:
          chunks.append([(offset, line_no), 0])
        chunks[-1][1] += 1
        rows += 1
      offset += len(raw)
  return ShardIndex(path, JSONL, rows, tuple((tuple(loc), n) for loc, n in chunks), dict(counts))


def _parse_json_line(raw: bytes, path: str, line_no: int, columns: Columns) -> dict:
  try:
    value = json.loads(raw)
  except json.JSONDecodeError as e:
    raise BadRowError(path, line_no, f"invalid JSON: {e.msg} (column {e.colno})") from None
  if not isinstance(value, dict):
    raise BadRowError(path, line_no, f"expected a JSON object, got {type(value).__name__}")
  for column in columns.all():
    if not isinstance(value.get(column), (str, int)) or value.get(column) == "":
      if column == columns.targets and value.get(column) == "":
        continue  # an empty target is a real (if rare) example
      raise BadRowError(path, line_no, f"field {column!r} is missing or not a string "
                        f"(fields present: {sorted(value)})")
  return value


@dataclasses.dataclass(frozen=True)
class _Block:
  """Decoded rows of a Parquet row group or a JSONL chunk, ready to be selected from at once.

  Text columns stay Arrow binary arrays (only selected rows become Python bytes); task and
  template type are integer codes into small tables of output values, and `keep` is each row's
  keep probability under the stream's plan.
  """
  inputs: "pa.Array"
  targets: "pa.Array"
  task_code: np.ndarray
  style_code: np.ndarray
  task_names: np.ndarray  # object array of UTF-8 bytes, by task code
  style_names: np.ndarray  # by style code
  num_shots: np.ndarray  # int32 by style code
  sources: np.ndarray  # by task code
  template_idx: np.ndarray  # int32 (-1 without the column)
  keep: np.ndarray  # float64 per row


def _codes(values: Sequence) -> Tuple[np.ndarray, list]:
  """(code per value, distinct values in order of appearance)."""
  table: Dict = {}
  codes = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int64, len(values))
  return codes, list(table)


def _arrow_codes(column) -> Tuple[np.ndarray, list]:
  """Dictionary-encodes an Arrow column (string or dictionary type) without per-row Python."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
  if not pa.types.is_dictionary(array.type):
    array = array.dictionary_encode()
  return (array.indices.to_numpy(zero_copy_only=False).astype(np.int64),
          array.dictionary.to_pylist())


def _as_binary(column):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
  if pa.types.is_dictionary(array.type):
    array = array.dictionary_decode()
  if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
    return array.cast(pa.large_binary())
  return array.cast(pa.binary())


def _bytes_table(values: Sequence) -> np.ndarray:
  out = np.empty([len(values)], dtype=object)
  out[:] = [v.encode("utf-8") if isinstance(v, str) else str(v).encode("utf-8") for v in values]
  return out


class ChunkReader:
  """Reads chunks of a stream's shards as _Blocks, keeping the last few in memory.

  A Parquet row group is decoded once and its chunks sliced from it. `keep` maps (task, template
  type) to a keep probability (pairs not in it: 0); `styles[shard]` is the template type of every
  row of a shard when its folder says it, else the column's values go through `normalize_style`.
  """

  def __init__(self, shards: Sequence[ShardIndex], columns: Columns, cache_size: int,
               keep: Mapping[Tuple[str, str], float], styles: Sequence[Optional[str]],
               normalize_style: Callable[[str, str, int], str],
               submix_of: Optional[Callable[[str], str]] = None,
               num_shots_of: Optional[Callable[[str], int]] = None):
    self._shards, self._columns = list(shards), columns
    self._keep, self._styles = dict(keep), list(styles)
    self._normalize_style, self._submix_of = normalize_style, submix_of
    self._num_shots_of = num_shots_of or (lambda style: -1)
    self._cache: "collections.OrderedDict" = collections.OrderedDict()
    self._cache_size = cache_size
    self._files: "collections.OrderedDict" = collections.OrderedDict()
    self._lock = threading.Lock()
    # Row number in its file of each chunk's first row (for errors).
    self._first_row = [np.cumsum([0] + [n for _, n in s.chunks[:-1]]) for s in self._shards]

  def _cached(self, key, load, cache=None, size=None):
    cache = self._cache if cache is None else cache
    size = size or self._cache_size
    with self._lock:
      if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = load()
    with self._lock:
      cache[key] = value
      while len(cache) > size:
        cache.popitem(last=False)
    return value

  def chunk(self, shard: int, chunk: int) -> Tuple[_Block, int, int]:
    """(block, first row of the chunk in the block, rows in the chunk)."""
    index = self._shards[shard]
    (a, b), num_rows = index.chunks[chunk]
    if index.file_format == PARQUET:
      first_row = int(self._first_row[shard][chunk]) - b
      block = self._cached((shard, "group", a), lambda: self._read_group(shard, a, first_row))
      return block, b, num_rows
    return self._cached((shard, chunk), lambda: self._read_lines(shard, a, b, num_rows)), 0, num_rows

  def _read_group(self, shard: int, group: int, first_row: int) -> _Block:
    path, columns = self._shards[shard].path, self._columns
    # The file stays open (its footer parsed once) and is read on this thread: Arrow's pool
    # would only add hand-offs on a host whose cores are busy.
    parquet = self._cached(shard, lambda: _parquet_file(path), self._files, OPEN_FILES)
    table = parquet.read_row_group(group, columns=columns.all(), use_threads=False)
    for column in (columns.inputs, columns.targets, columns.task):
      array = table.column(column)
      if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadRowError(path, first_row + row, f"column {column!r} is null (row {row} of row "
                          f"group {group}); expected a string")
    task_code, tasks = _arrow_codes(table.column(columns.task))
    if self._styles[shard] is None:
      style_code, styles = _arrow_codes(table.column(columns.template_type))
    else:
      style_code, styles = np.zeros([table.num_rows], np.int64), [self._styles[shard]]
    template_idx = (table.column(columns.template_idx).to_numpy().astype(np.int32)
                    if columns.template_idx else np.full([table.num_rows], -1, np.int32))
    return self._block(shard, lambda i: first_row + i, _as_binary(table.column(columns.inputs)),
                       _as_binary(table.column(columns.targets)), task_code, tasks, style_code,
                       styles, template_idx)

  def _read_lines(self, shard: int, offset: int, first_line: int, num_rows: int) -> _Block:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    path, columns = self._shards[shard].path, self._columns
    values = {c: [] for c in columns.all()}
    lines = []
    with _open(path) as f:
      f.seek(offset)
      line_no = first_line
      while len(values[columns.inputs]) < num_rows:
        raw = f.readline()
        if not raw:
          raise BadRowError(path, line_no, "file is shorter than when it was indexed; re-index it")
        if raw.strip():
          row = _parse_json_line(raw, path, line_no, columns)
          for c in values:
            values[c].append(row[c])
          lines.append(line_no)
        line_no += 1
    text = {c: pa.array([v if isinstance(v, str) else str(v) for v in values[c]], pa.string())
            for c in (columns.inputs, columns.targets)}
    task_code, tasks = _codes(values[columns.task])
    if self._styles[shard] is None:
      style_code, styles = _codes(values[columns.template_type])
    else:
      style_code, styles = np.zeros([num_rows], np.int64), [self._styles[shard]]
    template_idx = (np.asarray(values[columns.template_idx], np.int32) if columns.template_idx
                    else np.full([num_rows], -1, np.int32))
    return self._block(shard, lines.__getitem__, _as_binary(text[columns.inputs]),
                       _as_binary(text[columns.targets]), task_code, tasks, style_code, styles,
                       template_idx)

  def _block(self, shard, line_of, inputs, targets, task_code, tasks, style_code, styles,
             template_idx) -> _Block:
    path = self._shards[shard].path
    if self._styles[shard] is None:
      # Only the distinct values are normalized; a bad one names its first row.
      styles = [self._normalize_style(
          v, path, line_of(int(np.flatnonzero(style_code == i)[0]))) for i, v in enumerate(styles)]
    keep_by_pair = np.asarray([[self._keep.get((t, s), 0.0) for s in styles] for t in tasks],
                              np.float64).reshape(len(tasks), len(styles))
    return _Block(inputs, targets, task_code, style_code, _bytes_table(tasks),
                  _bytes_table(styles), np.asarray([self._num_shots_of(s) for s in styles], np.int32),
                  _bytes_table([self._submix_of(t) if self._submix_of else "" for t in tasks]),
                  template_idx, keep_by_pair[task_code, style_code])


def _mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finalizer: a well-spread 64-bit hash of uint64 values (vectorized)."""
  x = np.asarray(x).astype(np.uint64)
  with np.errstate(over="ignore"):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclasses.dataclass(frozen=True)
class KeepPlan:
  """Keep probability per (task, template type); rows of pairs not listed are never kept.

  `normalize_style` maps a raw template-type value to the plan's names (as when indexing).
  """
  keep: Mapping[Tuple[str, str], float]
  normalize_style: Callable[[str, str, int], str] = lambda v, p, r: v


def stream(shards: Sequence[ShardIndex], columns: Columns, plan: KeepPlan, *, seed: int,
           shuffle: bool, shard_index: int = 0, num_shards: int = 1,
           fixed_styles: Optional[Sequence[Optional[str]]] = None,
           submix_of: Optional[Callable[[str], str]] = None,
           num_shots_of: Optional[Callable[[str], int]] = None,
           features: Optional[Sequence[str]] = None,
           cycle_length: int = CYCLE_LENGTH) -> tf.data.Dataset:
  """The kept rows of this host's files as a dataset of {inputs, targets, _task_name,
  _template_type, _template_idx, _task_source, _num_shots} (or of those in `features`).

  `submix_of(task)` gives `_task_source` ("" without it) and `num_shots_of(template type)` gives
  `_num_shots` (-1, unknown, without it).

  Host `shard_index` of `num_shards` reads files shard_index, shard_index + num_shards, ... (so
  together the hosts read every row once per epoch). The order is a function of `seed` and the
  epoch; each new iteration of the dataset (an epoch under `repeat`) draws a new order and new
  keep decisions.
  """
  fixed_styles = list(fixed_styles) if fixed_styles is not None else [None] * len(shards)
  features = list(FEATURES) if features is None else [f for f in FEATURES if f in features]
  mine = list(range(shard_index, len(shards), num_shards))
  if not mine:
    raise ValueError(f"host {shard_index} of {num_shards} gets no file: the collection part has only "
                     f"{len(shards)} file(s); the input is split across hosts by file, so it needs "
                     f"at least as many files as hosts")
  host_shards = [shards[i] for i in mine]
  host_styles = [fixed_styles[i] for i in mine]
  chunk_shard, chunk_index = [], []
  for s, index in enumerate(host_shards):
    for c in range(len(index.chunks)):
      chunk_shard.append(s)
      chunk_index.append(c)
  num_chunks = len(chunk_shard)
  if num_chunks == 0:
    raise ValueError(f"host {shard_index}: its files {[s.path for s in host_shards]} have no rows")
  # Each stream reads `cycle_length` chunks at a time; two more cover a row group being replaced.
  reader = ChunkReader(host_shards, columns, cycle_length + 2, plan.keep, host_styles,
                       plan.normalize_style, submix_of, num_shots_of)
  # File ids in the hash (keep decisions) are global, so a row's decision does not depend on
  # how many hosts read the collection.
  global_file = np.asarray(mine, np.uint64)
  seed_key = np.uint64(_mix64(np.asarray([seed & (2**63 - 1)], np.uint64))[0])

  def read_chunk(chunk, key):
    """A chunk's kept rows in a keyed order: whole-chunk numpy work, no per-row Python."""
    chunk, key = int(chunk), np.uint64(int(key) & (2**64 - 1))
    shard, within = chunk_shard[chunk], chunk_index[chunk]
    block, start, num_rows = reader.chunk(shard, within)
    row = np.arange(num_rows, dtype=np.uint64)
    locator = (global_file[shard] << np.uint64(40)) + (np.uint64(within) << np.uint64(20)) + row
    # One uniform draw per (row, epoch key, seed); rows below their keep probability stay.
    epoch_key = _mix64(np.asarray([key ^ seed_key], np.uint64))
    uniform = (_mix64(locator ^ epoch_key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    kept = np.flatnonzero(uniform < block.keep[start:start + num_rows])
    if shuffle:  # a keyed permutation of the kept rows: sort by a second, independent hash
      order_key = _mix64(np.asarray([epoch_key[0] ^ _ORDER_SALT], np.uint64))
      kept = kept[np.argsort(_mix64(locator[kept] ^ order_key), kind="stable")]
    rows = kept + start
    task, style = block.task_code[rows], block.style_code[rows]
    column = {
        "inputs": lambda: block.inputs.take(rows).to_numpy(zero_copy_only=False),
        "targets": lambda: block.targets.take(rows).to_numpy(zero_copy_only=False),
        "_task_name": lambda: block.task_names[task],
        "_template_type": lambda: block.style_names[style],
        "_template_idx": lambda: block.template_idx[rows],
        "_task_source": lambda: block.sources[task],
        "_num_shots": lambda: block.num_shots[style]}
    return [column[f]() for f in features]

  def permute(i, n, key, salt):
    if not shuffle:
      return i
    return tf.random.experimental.index_shuffle(
        i, seed=tf.stack([tf.bitwise.bitwise_xor(key, tf.constant(seed, tf.int64)), salt]),
        max_index=tf.maximum(n - 1, 0))

  def rows_of(position, key):
    chunk = permute(position, tf.constant(num_chunks, tf.int64), key, tf.constant(-1, tf.int64))
    values = tf.py_function(read_chunk, [chunk, key], [FEATURES[f] for f in features])
    for v in values:
      v.set_shape([None])
    return tf.data.Dataset.from_tensor_slices(dict(zip(features, values)))

  def epoch(key):
    return tf.data.Dataset.range(num_chunks).interleave(
        lambda p: rows_of(p, key), cycle_length=cycle_length, block_length=1)

  if shuffle:
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
  else:
    keys = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64))
  options = tf.data.Options()
  # The reading function is a pure function of (file, chunk, epoch key): the iterator state
  # (positions; a restored interleave calls it again for its open chunks) is all a checkpoint
  # needs, so tf.data may leave the function's state out.
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  return keys.flat_map(epoch).with_options(options)

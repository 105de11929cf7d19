"""Lazy reading of large sharded example dumps (Parquet, JSONL) as a resumable tf.data stream.

A shard is indexed once (row counts, chunk boundaries, per-(task, template type) counts, reading
only the metadata columns) and read later one chunk at a time: at most a few chunks per stream are
in memory, whatever the size of the collection. The order is a keyed, stateless permutation of a
host's chunks and of the rows inside each chunk, redrawn every epoch, so the tf.data iterator state
a training checkpoint stores is a handful of integers per stream (plus the rows of the current
batch), not a shuffle buffer.

Which rows an epoch keeps is decided per row by a keyed hash against a keep probability given per
(task, template type): that is how per-task example caps, template-style shares and excluded tasks
are applied without reading anything twice.
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
FETCH_BATCH = 64


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


class ChunkReader:
  """Reads chunks of shards, keeping the last few decoded in memory (shared by a stream's threads)."""

  def __init__(self, shards: Sequence[ShardIndex], columns: Columns, cache_size: int):
    self._shards, self._columns = list(shards), columns
    self._cache: "collections.OrderedDict" = collections.OrderedDict()
    self._cache_size = cache_size
    self._lock = threading.Lock()

  def _cached(self, key, load):
    with self._lock:
      if key in self._cache:
        self._cache.move_to_end(key)
        return self._cache[key]
    value = load()
    with self._lock:
      self._cache[key] = value
      while len(self._cache) > self._cache_size:
        self._cache.popitem(last=False)
    return value

  def chunk(self, shard: int, chunk: int) -> Dict[str, np.ndarray]:
    """{column: object array of the chunk's values}."""
    index = self._shards[shard]
    (a, b), num_rows = index.chunks[chunk]
    if index.file_format == PARQUET:
      group = self._cached((shard, "group", a), lambda: self._read_group(index.path, a))
      return {c: v[b:b + num_rows] for c, v in group.items()}
    return self._cached((shard, chunk), lambda: self._read_lines(index.path, a, b, num_rows))

  def _read_group(self, path: str, group: int) -> Dict[str, np.ndarray]:
    table = _parquet_file(path).read_row_group(group, columns=self._columns.all())
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in self._columns.all()}

  def _read_lines(self, path: str, offset: int, first_line: int, num_rows: int):
    values = {c: [] for c in self._columns.all()}
    with _open(path) as f:
      f.seek(offset)
      line_no = first_line
      while len(values[self._columns.inputs]) < num_rows:
        raw = f.readline()
        if not raw:
          raise BadRowError(path, line_no, "file is shorter than when it was indexed; re-index it")
        if raw.strip():
          row = _parse_json_line(raw, path, line_no, self._columns)
          for c in values:
            values[c].append(row[c])
        line_no += 1
    return {c: np.asarray(v, dtype=object) for c, v in values.items()}


def _mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finalizer: a well-spread 64-bit hash of uint64 values (vectorized)."""
  x = x.astype(np.uint64)
  with np.errstate(over="ignore"):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _utf8(strings: Sequence) -> np.ndarray:
  """A 1-D object array of UTF-8 bytes (what a tf.string tensor takes)."""
  out = np.empty([len(strings)], dtype=object)
  out[:] = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in strings]
  return out


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
           cycle_length: int = CYCLE_LENGTH) -> tf.data.Dataset:
  """The kept rows of this host's files as a dataset of {inputs, targets, _task_name,
  _template_type, _template_idx, _task_source}.

  Host `shard_index` of `num_shards` reads files shard_index, shard_index + num_shards, ... (so
  together the hosts read every row once per epoch). The order is a function of `seed` and the
  epoch; each new iteration of the dataset (an epoch under `repeat`) draws a new order and new
  keep decisions.
  """
  fixed_styles = list(fixed_styles) if fixed_styles is not None else [None] * len(shards)
  mine = list(range(shard_index, len(shards), num_shards))
  if not mine:
    raise ValueError(f"host {shard_index} of {num_shards} gets no file: the collection part has only "
                     f"{len(shards)} file(s); the input is split across hosts by file, so it needs "
                     f"at least as many files as hosts")
  host_shards = [shards[i] for i in mine]
  host_styles = [fixed_styles[i] for i in mine]
  chunk_shard, chunk_index, chunk_rows = [], [], []
  for s, index in enumerate(host_shards):
    for c, (_, n) in enumerate(index.chunks):
      chunk_shard.append(s)
      chunk_index.append(c)
      chunk_rows.append(n)
  num_chunks = len(chunk_rows)
  if num_chunks == 0:
    raise ValueError(f"host {shard_index}: its files {[s.path for s in host_shards]} have no rows")
  # Each fetch touches at most `cycle_length` chunks; two more cover parallel fetches.
  reader = ChunkReader(host_shards, columns, cache_size=cycle_length + 2)
  chunk_rows_t = tf.constant(chunk_rows, tf.int64)
  # File ids in the hash (keep decisions) are global, so a row's decision does not depend on
  # how many hosts read the collection.
  global_file = np.asarray(mine, np.uint64)
  keep_table = dict(plan.keep)
  seed_key = np.uint64(_mix64(np.asarray([seed & (2**63 - 1)], np.uint64))[0])

  def permute(i, n, key, salt):
    if not shuffle:
      return i
    return tf.random.experimental.index_shuffle(
        i, seed=tf.stack([tf.bitwise.bitwise_xor(key, tf.constant(seed, tf.int64)), salt]),
        max_index=tf.maximum(n - 1, 0))

  def rows_of(position, key):
    chunk = permute(position, tf.constant(num_chunks, tf.int64), key, tf.constant(-1, tf.int64))
    n = chunk_rows_t[chunk]
    return tf.data.Dataset.range(n).map(
        lambda j: (chunk, permute(j, n, key, chunk), key))

  def epoch(key):
    return tf.data.Dataset.range(num_chunks).interleave(
        lambda p: rows_of(p, key), cycle_length=cycle_length, block_length=1)

  def fetch(chunks, rows, keys):
    chunks, rows, keys = chunks.numpy(), rows.numpy(), keys.numpy()
    picked, probabilities, locators = [], [], []
    epoch_keys = []
    for chunk, row, key in zip(chunks, rows, keys):
      shard = chunk_shard[chunk]
      values = reader.chunk(shard, chunk_index[chunk])
      task = values[columns.task][row]
      style = host_styles[shard]
      if style is None:
        style = plan.normalize_style(values[columns.template_type][row], host_shards[shard].path, -1)
      probability = keep_table.get((task, style), 0.0)
      if probability > 0.0:
        picked.append((values, row, task, style))
        probabilities.append(probability)
        locators.append((int(global_file[shard]) << 40) + (int(chunk_index[chunk]) << 20) + int(row))
        epoch_keys.append(int(key) & (2**64 - 1))
    if picked:
      # One uniform draw per (row, epoch key, seed); rows below their keep probability stay.
      epoch_key = _mix64(np.asarray(epoch_keys, np.uint64) ^ seed_key)
      draws = _mix64(np.asarray(locators, np.uint64) ^ epoch_key)
      uniform = (draws >> np.uint64(11)).astype(np.float64) / float(1 << 53)
      picked = [p for p, u, q in zip(picked, uniform, probabilities) if u < q]
    return [
        _utf8([v[columns.inputs][r] for v, r, _, _ in picked]),
        _utf8([v[columns.targets][r] for v, r, _, _ in picked]),
        _utf8([t for _, _, t, _ in picked]),
        _utf8([s for _, _, _, s in picked]),
        _utf8([submix_of(t) if submix_of else "" for _, _, t, _ in picked]),
        np.asarray([int(v[columns.template_idx][r]) if columns.template_idx else -1
                    for v, r, _, _ in picked], np.int32),
    ]

  def fetch_tf(chunks, rows, keys):
    values = tf.py_function(fetch, [chunks, rows, keys],
                            [tf.string] * 5 + [tf.int32])
    for v in values:
      v.set_shape([None])
    inputs, targets, task, style, source, idx = values
    return {"inputs": inputs, "targets": targets, "_task_name": task, "_template_type": style,
            "_template_idx": idx, "_task_source": source}

  if shuffle:
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
  else:
    keys = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64))
  ds = keys.flat_map(epoch).batch(FETCH_BATCH).map(
      fetch_tf, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).unbatch()
  options = tf.data.Options()
  # The reading function is a pure function of (file, chunk, row, epoch key): the iterator state
  # (positions) is all a checkpoint needs, so tf.data may leave the function's state out.
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  return ds.with_options(options)

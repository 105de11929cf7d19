"""Plain-Python readers for local data files. Every row carries (file, line) so errors can name it.

Readers yield `Row`s of raw values; a dataset's row mapper turns them into the task's string fields
and raises `BadRowError` for anything it cannot use.
"""
import csv
import dataclasses
import io
import json
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple


_FIELD_LIMIT = 2**31 - 1


class BadRowError(ValueError):
  """A row that cannot become an example; the message names the file and line."""

  def __init__(self, path: str, line: int, problem: str):
    super().__init__(f"{path}:{line}: {problem}")
    self.path, self.line, self.problem = path, line, problem


@dataclasses.dataclass(frozen=True)
class Row:
  """One raw record; `error` is set (and `values` empty) when the record itself is malformed.

  Line-level problems are yielded, not raised, so a caller that skips bad rows can go on reading.
  """
  path: str
  line: int
  values: Dict[str, Any]
  error: str = ""

  def check(self) -> "Row":
    if self.error:
      raise BadRowError(self.path, self.line, self.error)
    return self


def _not_utf8(byte: int, column: int) -> str:
  return f"not valid UTF-8: byte 0x{byte:02x} at column {column} (save the file as UTF-8)"


def _decode_file(path: str) -> str:
  """The whole file as text; a non-UTF-8 byte raises BadRowError naming its line and column."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line_start = raw.rfind(b"\n", 0, e.start) + 1
    raise BadRowError(path, raw.count(b"\n", 0, e.start) + 1,
                      _not_utf8(raw[e.start], e.start - line_start + 1)) from None


def read_jsonl(path: str) -> Iterator[Row]:
  """One JSON object per line; blank lines are allowed (and are not rows). A last line may lack '\\n'.

  Lines end at '\\n' only (a JSON string cannot hold a raw newline); each line is decoded on its
  own, so a non-UTF-8 byte is a bad row like any other.
  """
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield Row(path, line_no, {}, _not_utf8(raw[e.start], e.start + 1))
        continue
      if not line.strip():
        continue
      try:
        value = json.loads(line)
      except json.JSONDecodeError as e:
        yield Row(path, line_no, {}, f"invalid JSON: {e.msg} (column {e.colno})")
        continue
      except RecursionError:
        yield Row(path, line_no, {}, "invalid JSON: nested too deeply")
        continue
      if not isinstance(value, dict):
        yield Row(path, line_no, {}, f"expected a JSON object, got {type(value).__name__}")
        continue
      yield Row(path, line_no, value)


def read_json_array(path: str) -> Iterator[Row]:
  """A JSON array of objects (SAMSum's layout); `line` is the 1-based index in the array."""
  text = _decode_file(path)
  try:
    values = json.loads(text)
  except json.JSONDecodeError as e:
    raise BadRowError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
  except RecursionError:
    raise BadRowError(path, 1, "invalid JSON: nested too deeply") from None
  if not isinstance(values, list):
    raise BadRowError(path, 1, f"expected a JSON array of objects, got {type(values).__name__}")
  for index, value in enumerate(values, start=1):
    if not isinstance(value, dict):
      yield Row(path, index, {}, f"array item {index}: expected an object, got {type(value).__name__}")
      continue
    yield Row(path, index, value)


def read_delimited(path: str, delimiter: str = ",") -> Iterator[Row]:
  """CSV/TSV with a header row (RFC 4180 quoting); `line` is where the record starts in the file.

  Quoting is strict: an unclosed quote or text after a closing quote is an error at its line (a
  lenient reader would silently merge the following rows into one field). Fields may be of any
  length (the csv module's 128 KiB field limit is lifted for the process).
  """
  if csv.field_size_limit() < _FIELD_LIMIT:
    csv.field_size_limit(_FIELD_LIMIT)
  reader = csv.reader(io.StringIO(_decode_file(path), newline=""), delimiter=delimiter, strict=True)
  try:
    header = next(reader)
  except StopIteration:
    raise BadRowError(path, 1, "empty file: expected a header row") from None
  except csv.Error as e:
    raise BadRowError(path, reader.line_num, f"malformed header row: {e}") from None
  if len(set(header)) != len(header) or not all(name.strip() for name in header):
    raise BadRowError(path, 1, f"header row must name every column once, got {header!r}")
  start_line = reader.line_num + 1
  while True:
    try:
      record = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      raise BadRowError(path, start_line, f"malformed CSV record (starts here, fails at line "
                        f"{reader.line_num}): {e}") from None
    if record:
      if len(record) != len(header):
        yield Row(path, start_line, {}, f"expected {len(header)} columns "
                  f"({delimiter.join(header)!r}), got {len(record)}")
      else:
        yield Row(path, start_line, dict(zip(header, record)))
    start_line = reader.line_num + 1


def read_conll(path: str) -> Iterator[Row]:
  """CoNLL column format: `TOKEN ... TAG` per line, sentences split by blank lines, -DOCSTART- skipped.

  Yields rows with `tokens` and `tags` (the last column), `line` being the sentence's first line.
  """
  tokens: List[str] = []
  tags: List[str] = []
  start, error = 0, ""
  for line_no, line in enumerate(_decode_file(path).split("\n"), start=1):
    columns = line.split()
    if not columns or columns[0] == "-DOCSTART-":
      if tokens or error:
        yield Row(path, start, {} if error else {"tokens": tokens, "tags": tags}, error)
        tokens, tags, error = [], [], ""
      continue
    if not tokens and not error:
      start = line_no
    if len(columns) < 2:
      error = error or f"line {line_no}: expected 'TOKEN ... TAG' columns, got {line.strip()!r}"
      continue
    tokens.append(columns[0])
    tags.append(columns[-1])
  if tokens or error:
    yield Row(path, start, {} if error else {"tokens": tokens, "tags": tags}, error)


def read_parallel_lines(paths: Sequence[str], keys: Sequence[str]) -> Iterator[Row]:
  """Line-aligned files (CodeXGLUE's `x.java`/`x.cs`): line i of each file forms one row."""
  if len(paths) != len(keys):
    raise ValueError(f"read_parallel_lines: {len(paths)} paths but {len(keys)} keys")
  # Split at '\n' only: str.splitlines would also split at form feeds, U+2028 etc. inside code,
  # which shifts one file against the other.
  contents = [_lines(path) for path in paths]
  counts = [len(c) for c in contents]
  if len(set(counts)) != 1:
    detail = ", ".join(f"{p}: {n} lines" for p, n in zip(paths, counts))
    raise BadRowError(paths[0], min(counts) + 1, f"parallel files differ in length ({detail})")
  for line_no, values in enumerate(zip(*contents), start=1):
    yield Row(paths[0], line_no, dict(zip(keys, values)))


def _lines(path: str) -> List[str]:
  """Lines split at '\\n' (a trailing '\\r' dropped); no empty last line after a final newline."""
  lines = _decode_file(path).split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


ENTITY_TYPE_NAMES = {"PER": "person", "LOC": "location", "ORG": "organization", "MISC": "miscellaneous"}
ENTITY_TYPE_ORDER = ("person", "location", "organization", "miscellaneous")


def entities_from_iob(tokens: Sequence[str], tags: Sequence[str],
                      where: Tuple[str, int] = ("<tags>", 0)) -> List[Tuple[str, str]]:
  """IOB1/IOB2 tags -> [(type name, entity text)] in order of appearance."""
  entities: List[Tuple[str, List[str]]] = []
  previous_type = None
  for token, tag in zip(tokens, tags):
    if tag == "O":
      previous_type = None
      continue
    prefix, _, raw_type = tag.partition("-")
    if prefix not in ("B", "I") or not raw_type:
      raise BadRowError(where[0], where[1], f"unknown NER tag {tag!r} (expected O, B-TYPE or I-TYPE)")
    type_name = ENTITY_TYPE_NAMES.get(raw_type, raw_type.lower())
    if prefix == "I" and previous_type == type_name:
      entities[-1][1].append(token)
    else:
      entities.append((type_name, [token]))
    previous_type = type_name
  return [(type_name, " ".join(words)) for type_name, words in entities]


def format_entities(entities: Sequence[Tuple[str, str]]) -> str:
  """[(person, A), (location, C), (person, B)] -> 'person: A, B; location: C' (fixed type order).

  A sentence with no entities becomes 'none'.
  """
  by_type: Dict[str, List[str]] = {}
  for type_name, text in entities:
    by_type.setdefault(type_name, []).append(text)
  order = [t for t in ENTITY_TYPE_ORDER if t in by_type] + sorted(
      t for t in by_type if t not in ENTITY_TYPE_ORDER)
  if not order:
    return "none"
  return "; ".join(f"{t}: {', '.join(by_type[t])}" for t in order)


RowMapper = Callable[[Row], Dict[str, str]]

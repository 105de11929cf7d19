"""Bad input, fuzzed (hypothesis): the file readers behind the built-in datasets and the user's own
files (JSONL, JSON, CSV/TSV, CoNLL, line-aligned code pairs) and the infer job's JSONL input.

Each case either reads back exactly what was written, or raises one error that starts with
`<file>:<line>:` and says what was expected; nothing else escapes and no row is dropped unless
the user asked for skips (then the skips are counted in the log).
"""

import csv
import io
import json
import logging
import os
import re
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from flan_tasks import code_escape, datasets, readers, registry, sources
from flan_t5x import infer

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any text: quotes, delimiters, embedded newlines and carriage returns, U+2028, form feeds, NULs.
TEXT = st.text(st.characters(blacklist_categories=('Cs',)), min_size=1, max_size=40)
NON_BLANK = TEXT.filter(lambda t: t.strip())
USER_FIELDS = {'inputs': 'question', 'targets': 'answer'}


def _write(directory, name, payload) -> str:
  path = os.path.join(directory, name)
  with open(path, 'wb') as f:
    f.write(payload if isinstance(payload, bytes) else payload.encode('utf-8'))
  return path


def _user_spec(ext):
  return sources.FileSpec('user', {'train': ()}, registry._READERS[ext], registry._field_mapper(USER_FIELDS))


def _load(spec, fields, paths, skip=False):
  try:
    return sources._load_columns(paths, spec, fields, skip, 'fuzz')
  finally:
    sources._ROW_CACHE.clear()


def _assert_names_file_and_line(err, paths, max_line=None):
  """One error, `<file>:<line>: <what was expected>`, or the 'no examples in <files>' error."""
  message = str(err)
  if isinstance(err, readers.BadRowError):
    assert err.path in paths and message.startswith(f'{err.path}:{err.line}: '), message
    assert err.line >= 1 and (max_line is None or err.line <= max_line), message
    assert len(err.problem) > 10, message
  else:
    assert type(err) is ValueError and 'no examples in' in message and paths[0] in message, message


# ------------------------------------------------------------------ read back exactly


def _user_rows(draw_rows):
  return [{'question': q, 'answer': a} for q, a in draw_rows]


ROWS = st.lists(st.tuples(NON_BLANK, NON_BLANK), min_size=1, max_size=8)


@FUZZ
@given(ROWS)
@example([('a "quoted", field', 'line one\nline two\r\n'), ('\u2028sep\x0c', 'x' * 200_000)])
def test_user_files_read_back_exactly(rows):
  expected = {'inputs': [q for q, _ in rows], 'targets': [a for _, a in rows]}
  with tempfile.TemporaryDirectory() as tmp:
    jsonl = _write(tmp, 'd.jsonl', ''.join(json.dumps(r) + '\n' for r in _user_rows(rows)))
    array = _write(tmp, 'd.json', json.dumps(_user_rows(rows), ensure_ascii=False))
    for ext, path in (('.jsonl', jsonl), ('.json', array)):
      assert _load(_user_spec(ext), tuple(USER_FIELDS), [path]) == expected, ext
    for ext, delimiter in (('.csv', ','), ('.tsv', '\t')):
      out = io.StringIO(newline='')
      writer = csv.writer(out, delimiter=delimiter)
      writer.writerow(['question', 'answer'])
      writer.writerows(rows)
      path = _write(tmp, 'd' + ext, out.getvalue())
      assert _load(_user_spec(ext), tuple(USER_FIELDS), [path]) == expected, ext


LINE = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\n'), min_size=1,
               max_size=40).filter(lambda t: t.strip() and not t.endswith('\r'))


@FUZZ
@given(st.lists(st.tuples(LINE, LINE), min_size=1, max_size=8))
def test_code_pairs_stay_aligned(pairs):
  """Form feeds, U+2028, NEL inside a line are not line breaks (str.splitlines would say they are)."""
  spec = next(d for d in datasets.BUILTIN_DATASETS if d.name == 'code_java2cs').files
  with tempfile.TemporaryDirectory() as tmp:
    java = _write(tmp, 'x.java', ''.join(j + '\n' for j, _ in pairs))
    cs = _write(tmp, 'x.cs', ''.join(c + '\n' for _, c in pairs))
    columns = _load(spec, ('source_code', 'target_code'), [java, cs])
  escape = code_escape.escape  # the code tasks escape what T5's vocabulary lacks
  assert columns == {'source_code': [escape(j.strip()) for j, _ in pairs],
                     'target_code': [escape(c.strip()) for _, c in pairs]}


TOKEN = st.text(st.characters(blacklist_categories=('Cs', 'Zs', 'Zl', 'Zp', 'Cc')), min_size=1, max_size=8).filter(
    lambda t: len(t.split()) == 1 and t != '-DOCSTART-')


@FUZZ
@given(st.lists(st.lists(st.tuples(TOKEN, st.sampled_from(['O', 'B-PER', 'I-PER', 'B-LOC'])), min_size=1,
                         max_size=5), min_size=1, max_size=4))
def test_conll_sentences_read_back(sentences):
  text = '\n\n'.join('\n'.join(f'{token} NN {tag}' for token, tag in sentence) for sentence in sentences)
  with tempfile.TemporaryDirectory() as tmp:
    rows = list(readers.read_conll(_write(tmp, 'train.txt', text + '\n')))
  assert [r.values for r in rows] == [{'tokens': [t for t, _ in s], 'tags': [g for _, g in s]} for s in sentences]


@FUZZ
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_infer_inputs_read_back(texts):
  with tempfile.TemporaryDirectory() as tmp:
    path = _write(tmp, 'in.jsonl', ''.join(json.dumps({'input': t}) + '\n' for t in texts))
    assert [r['input'] for r in infer.read_jsonl_inputs(path, 'input')] == texts


# ------------------------------------------------------------------ one bad row: its line, its field

FAULTS = {
    'null field': lambda row: json.dumps(dict(row, answer=None)),
    'number field': lambda row: json.dumps(dict(row, answer=[1, 2])),
    'missing field': lambda row: json.dumps({'question': row['question']}),
    'blank field': lambda row: json.dumps(dict(row, answer='  ')),
    'not an object': lambda row: json.dumps([row['question'], row['answer']]),
    'truncated line': lambda row: json.dumps(row)[:-3],
    'non-UTF-8 bytes': lambda row: json.dumps(row, ensure_ascii=False).encode() + b'\xff\xfe',
}
EXPECTED = {'null field': "'answer' is missing or empty", 'number field': "'answer': expected a string",
            'missing field': "'answer' is missing or empty", 'blank field': "'answer' is missing or empty",
            'not an object': 'expected a JSON object', 'truncated line': 'invalid JSON',
            'non-UTF-8 bytes': 'not valid UTF-8'}


@FUZZ
@given(ROWS, st.data(), st.sampled_from(sorted(FAULTS)))
def test_one_bad_jsonl_row_is_named_or_counted(rows, data, fault):
  bad = data.draw(st.integers(0, len(rows) - 1))
  lines = [json.dumps(r).encode() for r in _user_rows(rows)]
  line = FAULTS[fault](_user_rows(rows)[bad])
  lines[bad] = line if isinstance(line, bytes) else line.encode()
  with tempfile.TemporaryDirectory() as tmp:
    path = _write(tmp, 'd.jsonl', b'\n'.join(lines) + b'\n')
    with pytest.raises(readers.BadRowError) as caught:
      _load(_user_spec('.jsonl'), tuple(USER_FIELDS), [path])
    assert str(caught.value).startswith(f'{path}:{bad + 1}: ') and EXPECTED[fault] in str(caught.value)
    if len(rows) > 1:  # skip_bad_rows=True: the others are read, the skip is counted
      handler = _Records()
      logging.getLogger(sources.__name__).addHandler(handler)
      try:
        columns = _load(_user_spec('.jsonl'), tuple(USER_FIELDS), [path], skip=True)
      finally:
        logging.getLogger(sources.__name__).removeHandler(handler)
      assert columns['inputs'] == [q for i, (q, _) in enumerate(rows) if i != bad]
      assert any('skipped 1 bad rows (skip_bad_rows=True)' in m for m in handler.messages)
    if fault != 'blank field':  # infer takes any string, blank included
      with pytest.raises(ValueError, match=rf'^{re.escape(path)}:{bad + 1}: '):
        infer.read_jsonl_inputs(path, 'answer' if 'field' in fault else 'question')


class _Records(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_delimited_structure_errors_name_the_line(tmp_path):
  cases = {
      'unclosed quote': ('question,answer\nok,fine\n"never closed,x\nmore,rows\n', 3, 'malformed CSV record'),
      'text after a quote': ('question,answer\n"a"b,c\n', 2, 'malformed CSV record'),
      'wrong column count': ('question,answer\na,b,c\n', 2, 'expected 2 columns'),
      'wrong header': ('query,reply\na,b\n', 2, "field 'question' is missing or empty"),
      'duplicate header': ('question,question\na,b\n', 1, 'name every column once'),
      'empty file': ('', 1, 'empty file: expected a header row'),
      'non-UTF-8': (b'question,answer\nok,fine\nbad\xe9,x\n', 3, 'not valid UTF-8: byte 0xe9 at column 4'),
  }
  for name, (content, line, expected) in cases.items():
    path = _write(str(tmp_path), f'{name.replace(" ", "_")}.csv', content)
    with pytest.raises(readers.BadRowError) as caught:
      _load(_user_spec('.csv'), tuple(USER_FIELDS), [path])
    assert str(caught.value).startswith(f'{path}:{line}: ') and expected in str(caught.value), (name, caught.value)
  # A NUL byte is data to Python >= 3.11's csv module: read as it is, not dropped.
  path = _write(str(tmp_path), 'nul.csv', 'question,answer\na\x00,b\n')
  assert _load(_user_spec('.csv'), tuple(USER_FIELDS), [path]) == {'inputs': ['a\x00'], 'targets': ['b']}


def test_clothing_csv_with_a_wrong_header_is_an_error_not_an_empty_dataset(tmp_path):
  spec = next(d for d in datasets.BUILTIN_DATASETS if d.name == 'clothing_reviews').files
  path = _write(str(tmp_path), 'train.csv', 'Title,Review,Rating\nNice,Good fit,5\n')
  with pytest.raises(readers.BadRowError, match=r":2: missing column\(s\) \['Review Text'\]"):
    _load(spec, ('review', 'rating'), [path])


# ------------------------------------------------------------------ arbitrary bytes


@FUZZ
@given(st.binary(max_size=300) | TEXT.map(str.encode), st.sampled_from(sorted(registry._READERS)))
def test_any_bytes_in_a_user_file_read_or_name_file_and_line(payload, ext):
  with tempfile.TemporaryDirectory() as tmp:
    path = _write(tmp, 'd' + ext, payload)
    try:
      columns = _load(_user_spec(ext), tuple(USER_FIELDS), [path])
    except (readers.BadRowError, ValueError) as err:
      # csv also ends lines at a lone '\r'
      _assert_names_file_and_line(err, [path], payload.count(b'\n') + payload.count(b'\r') + 1)
    else:
      assert all(isinstance(v, str) and v.strip() for values in columns.values() for v in values)


FILE_DATASETS = [d for d in datasets.BUILTIN_DATASETS if d.files is not None]


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=100), st.sampled_from([d.name for d in FILE_DATASETS]))
def test_any_bytes_in_a_builtin_dataset_file_read_or_name_file_and_line(payload, second, name):
  dataset = next(d for d in FILE_DATASETS if d.name == name)
  with tempfile.TemporaryDirectory() as tmp:
    paths = [_write(tmp, f'f{i}', p) for i, p in enumerate((payload, second)[:len(dataset.files.split_files['train'])])]
    try:
      columns = _load(dataset.files, dataset.fields, paths)
    except (readers.BadRowError, ValueError) as err:
      _assert_names_file_and_line(err, paths, max(p.count(b'\n') + p.count(b'\r') for p in (payload, second)) + 1)
    else:
      assert all(isinstance(v, str) for values in columns.values() for v in values)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_infer_input_read_or_name_file_and_line(payload):
  with tempfile.TemporaryDirectory() as tmp:
    path = _write(tmp, 'in.jsonl', payload)
    try:
      rows = infer.read_jsonl_inputs(path, 'input')
    except ValueError as err:
      assert re.match(rf'{re.escape(path)}:\d+: ', str(err)), str(err)
    else:
      assert all(isinstance(r['input'], str) for r in rows)

"""The T5X binding table in gin/README.md, read back and checked against flan_t5x's gin parser.

Each row names a binding as T5X's own files write it (t5x/configs/runs/*.gin,
t5x/examples/t5/t5_1_1/*.gin and its examples/), the job it belongs to, the T5X file it comes
from, and whether flan_t5x honours it or refuses it (with the one-line reason the job prints).
"""
import os
import re

import gin

from flan_t5x import gin_utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE_START, TABLE_END = '<!-- t5x-bindings:start -->', '<!-- t5x-bindings:end -->'
JOB_BASE = {'train': ['gin/demo.gin'], 'eval': ['gin/eval_demo.gin'], 'infer': ['gin/infer.gin']}
SERVED_RUN_FILES = ('eval', 'finetune', 'infer', 'pretrain')
T5X_MODULES = ('utils', 'partitioning', 'trainer', 'adafactor', 'models', 'decoding', 'optimizers', 'gin_utils',
               'checkpoints', 'export_lib')
_ROW = re.compile(r'^\| `(?P<binding>[^`]+)` \| (?P<job>\w+) \| (?P<source>[^|]+) \| (?P<status>honoured|refused)'
                  r'(?:: (?P<note>.*))? \|$')


def read_table(path: str = os.path.join(REPO, 'gin', 'README.md')) -> list[dict]:
  text = open(path, encoding='utf-8').read()
  body = text[text.index(TABLE_START):text.index(TABLE_END)]
  return [m.groupdict() for m in map(_ROW.match, body.splitlines()) if m]


def _root(binding: str) -> str:
  selector = binding.split('=', 1)[0].strip().split('/')[-1]
  return selector.split('.')[0]


def _import_line(root: str) -> str | None:
  if root in T5X_MODULES:
    return f'from t5x import {root}'
  if root.endswith('_script'):
    return f'import __main__ as {root}'
  if root == 'network':
    return 'from t5x.examples.t5 import network'
  if root in ('seqio', 'optax'):
    return f'import {root}'
  return None  # a macro


def base_files(row: dict) -> list[str]:
  """The flan_t5x files a user's file adds the binding to: T5X's run file it comes from (served by
  flan_t5x) after the demo model, else the job's demo file."""
  name = os.path.basename(row['source'].strip())
  if row['source'].strip().startswith('configs/runs/') and name[:-len('.gin')] in SERVED_RUN_FILES:
    return ['gin/demo_model.gin', f't5x/configs/runs/{name}']
  return JOB_BASE[row['job']]


def binding_forms(binding: str) -> dict[str, list[str]]:
  """The binding as --gin_bindings lines: one-line form, and block form (`Selector:` / `  param = value`)."""
  imports = ['from __gin__ import dynamic_registration']
  line = _import_line(_root(binding))
  if line is None:
    return {'one-line': [binding]}
  imports.append(line)
  name, value = (part.strip() for part in binding.split('=', 1))
  for root in re.findall(r'@(?:\w+/)?(\w+)\.', value):  # modules the value names
    extra = _import_line(root)
    if extra and extra not in imports:
      imports.append(extra)
  selector, param = name.rsplit('.', 1)
  return {'one-line': imports + [binding], 'block': imports + [f'{selector}:\n  {param} = {value}']}


def parse(row: dict, form: str) -> str | None:
  """None if flan_t5x parses the binding in `form`, else the ConfigError's message."""
  bindings = binding_forms(row['binding'])[form]
  gin.clear_config(clear_constants=True)
  try:
    gin_utils.parse_gin(base_files(row), bindings, gin_search_paths=[REPO], job=row['job'], finalize=False,
                        strict_macros=_import_line(_root(row['binding'])) is None)
  except gin_utils.ConfigError as e:
    return str(e)
  finally:
    gin.clear_config(clear_constants=True)
  return None

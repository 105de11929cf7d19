"""Configuration mistakes caught before any work starts, each with what to change.

- `--gin.NAME=...` for a macro no gin file defines (a typo such as TRAIN_STPES would
  otherwise define a new, unused macro and leave the intended one at its default);
- a `%gin.REQUIRED` macro left unset (all of them listed at once);
- a value of the wrong type for a job argument or a config dataclass field (checked
  against the annotations, e.g. TRAIN_STEPS='100' or BATCH_SIZE=8.5);
- an unknown task or mixture name (with the closest registered names).

Gin has no public list of macros; `gin.config_str()` (public) prints them as
`NAME = value` lines at the top level, which is what `defined_macros` reads.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import re
import types
import typing
from typing import Any, Callable, Collection, Mapping, Sequence

_MACRO_LINE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*) = (.*)$')
_MACRO_BINDING = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=')


def defined_macros() -> dict[str, str]:
  """{macro name: value text} of the parsed gin configuration."""
  import gin  # pylint: disable=g-import-not-at-top
  macros = {}
  for line in gin.config_str().splitlines():
    match = _MACRO_LINE.match(line)
    if match:
      macros[match.group(1)] = match.group(2)
  return macros


def known_macros() -> set[str]:
  """Macros the parsed files define or use (`%NAME`): the names a command line may set."""
  import gin  # pylint: disable=g-import-not-at-top
  return set(defined_macros()) | set(re.findall(r'%([A-Za-z_][A-Za-z0-9_]*)', gin.config_str()))


def _suggest(name: str, known: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
  return f' Did you mean {", ".join(close)}?' if close else ''


def check_macro_overrides(bindings: Sequence[str], macros: Collection[str]) -> None:
  """Each `NAME = value` binding must set a macro the gin files define or use, or a later binding uses."""
  for index, binding in enumerate(bindings):
    match = _MACRO_BINDING.match(binding)
    if not match or match.group(1) in macros:
      continue
    name = match.group(1)
    if any(re.search(rf'%{name}\b', later) for later in bindings[index + 1:]):
      continue  # a helper macro the command line itself uses
    raise ValueError(f'--gin.{name} sets a macro that no gin file defines.{_suggest(name, sorted(macros))} '
                     'Fix the name, or define the macro in a gin file that uses it.')


def check_required_macros(macros: Mapping[str, str]) -> None:
  missing = sorted(name for name, value in macros.items() if value == '%gin.REQUIRED')
  if missing:
    flags = ' '.join(f'--gin.{name}=...' for name in missing)
    raise ValueError(f'Required macro(s) not set: {", ".join(missing)}. Pass them, e.g. {flags} '
                     '(strings in quotes: --gin.MODEL_DIR="\'/path\'"; None where a path is optional).')


# ------------------------------------------------------------------ argument types


def _type_ok(value: Any, hint: Any) -> bool | None:
  """Whether `value` fits `hint`; None where the hint is not one this check understands."""
  if hint is Any:
    return True
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    verdicts = [_type_ok(value, arg) for arg in typing.get_args(hint)]
    return True if True in verdicts else (None if None in verdicts else False)
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is str:
    return isinstance(value, str)
  if origin in (dict, collections.abc.Mapping):
    if not isinstance(value, Mapping):
      return False
    key_hint, value_hint = typing.get_args(hint) or (Any, Any)
    verdicts = [v for k, val in value.items() for v in (_type_ok(k, key_hint), _type_ok(val, value_hint))]
    return False if False in verdicts else True
  return None


def _describe(hint: Any) -> str:
  if typing.get_args(hint):  # Mapping[str, int], int | None
    return str(hint).replace('typing.', '').replace('collections.abc.', '')
  return getattr(hint, '__name__', None) or str(hint)


def check_arguments(fn: Callable, arguments: Mapping[str, Any], where: str | None = None) -> None:
  """Checks `arguments` of `fn` (and the fields of dataclass values) against their annotations."""
  where = where or fn.__name__
  hints = typing.get_type_hints(fn)
  for name in inspect.signature(fn).parameters:
    if name in arguments and name in hints:
      _check_value(arguments[name], hints[name], f'{where}.{name}')


def _check_value(value: Any, hint: Any, where: str) -> None:
  if _type_ok(value, hint) is False:
    raise TypeError(f'{where} must be {_describe(hint)}, got {type(value).__name__} {value!r:.80}. '
                    'Fix the gin binding or macro that sets it (e.g. numbers without quotes).')
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    hints = typing.get_type_hints(type(value))
    for field in dataclasses.fields(value):
      if field.name in hints:
        _check_value(getattr(value, field.name), hints[field.name], f'{type(value).__name__}.{field.name}')


# ------------------------------------------------------------------ task names


def check_task_name(name: str, module: str | None = None) -> None:
  """An unknown SeqIO task or mixture name, with the closest registered ones."""
  import importlib  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  if module:
    importlib.import_module(module)
  known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if name not in known:
    raise ValueError(f'Unknown task or mixture {name!r} (MIXTURE_OR_TASK_NAME).{_suggest(name, sorted(known))} '
                     f'{len(known)} are registered'
                     + (f' after importing {module!r}.' if module else '; is MIXTURE_OR_TASK_MODULE set?'))


# ------------------------------------------------------------------ macros in gin files


def _definition_site(name: str, gin_files: Sequence[str], search_paths: Sequence[str]) -> str:
  """'path:line: ' of `NAME = ...` in one of `gin_files` (as given or on a search path), or ''."""
  import os  # pylint: disable=g-import-not-at-top
  pattern = re.compile(rf'^\s*{re.escape(name)}\s*=')
  for gin_file in gin_files:
    candidates = [gin_file] + [os.path.join(p, gin_file) for p in search_paths]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
      continue
    with open(path, encoding='utf-8', errors='replace') as f:
      for number, line in enumerate(f, 1):
        if pattern.match(line):
          return f'{path}:{number}: '
  return ''


def check_unused_macros(gin_files: Sequence[str] = (), search_paths: Sequence[str] = ()) -> None:
  """A macro defined in a gin file, used nowhere, and close to one that is used is a typo
  (`TRAIN_STEPZ = 3` would otherwise leave TRAIN_STEPS at its default). Unused macros with no
  close name (DROPOUT_RATE where the model file sets dropout itself) are T5X convention, allowed."""
  import gin  # pylint: disable=g-import-not-at-top
  used = set(re.findall(r'%([A-Za-z_][A-Za-z0-9_]*)', gin.config_str()))
  for name in sorted(set(defined_macros()) - used):
    close = difflib.get_close_matches(name, sorted(used), n=3, cutoff=0.8)
    if close:
      raise ValueError(f'{_definition_site(name, gin_files, search_paths)}macro {name} is defined but no binding uses '
                       f'%{name}. Did you mean {", ".join(close)}? Fix the name (as it is, the setting is '
                       'ignored).')


def raise_refused(config) -> None:
  """ValueError for the first field of a config dataclass whose `refusal(field, value)` names a value
  flan_t5x cannot honour (gin_utils asks the same `refusal` when it parses the files)."""
  for field in dataclasses.fields(config):
    message = config.refusal(field.name, getattr(config, field.name))
    if message:
      raise ValueError(message)


# ------------------------------------------------------------------ gin's errors, explained

_JOB_ENTRY = {'train': 'train_script.train', 'eval': 'eval_script.evaluate', 'infer': 'infer_script.infer'}
_EXAMPLE_FILE = {'train': 'gin/demo.gin', 'eval': 'gin/eval_demo.gin', 'infer': 'gin/infer.gin'}
_T5X_MODULES = ('utils', 'partitioning', 'trainer', 'adafactor', 'models', 'decoding', 'optimizers', 'gin_utils')


def explain_gin_error(text: str, gin_files: Sequence[str], job: str, search_paths: Sequence[str] = (),
                      bindings: Sequence[str] = ()) -> str | None:
  """One line with the fix for gin's usual errors (None if not one of them): an unquoted string value,
  a gin file that does not exist, another job's file, a configurable no file imports."""
  token = re.search(r"Failed to parse token '([^']*)' \(line (\d+)\)", text)
  if token:
    lines = '\n'.join(bindings).splitlines()
    line = lines[int(token.group(2)) - 1] if 'In file' not in text and int(token.group(2)) <= len(lines) else ''
    if '=' in line:
      name, value = (part.strip() for part in line.split('=', 1))
      return (f'--gin.{name}={value}: a string needs quotes inside the flag, e.g. --gin.{name}="\'{value}\'" '
              '(the shell removes the outer quotes, gin reads the inner ones).')
    return f'gin cannot read the value {token.group(1)!r}: a string needs quotes, e.g. \'{token.group(1)}\'.'

  missing = re.search(r'Unable to open file: (\S+?)\.? Searched', text)
  if missing:
    path = missing.group(1)
    nearest = difflib.get_close_matches(path, _gin_files_near(search_paths), n=3, cutoff=0.6)
    return (f'{path}: no such gin file (looked in the current directory, the --gin_search_paths and the '
            'repository root)' + (f'. Did you mean {", ".join(nearest)}?' if nearest else '.'))
  other_job = re.search(r"Couldn't resolve selector (\w+_script)\.(\w+)", text)
  if other_job and f'{other_job.group(1)}.{other_job.group(2)}' != _JOB_ENTRY.get(job):
    wanted = {'train_script': 'train', 'eval_script': 'eval', 'infer_script': 'infer'}.get(other_job.group(1), '?')
    return (f'{", ".join(gin_files)} configure{"s" if len(gin_files) == 1 else ""} the {wanted} job '
            f'({other_job.group(1)}.{other_job.group(2)}), not {job}: run python -m flan_t5x.{wanted} with '
            f'{"it" if len(gin_files) == 1 else "them"}, or give python -m flan_t5x.{job} a {job} file such as '
            f'{_EXAMPLE_FILE.get(job, "")}.')
  unknown = re.search(r"No configurable matching '([\w./]+)'", text)
  if unknown:
    selector = unknown.group(1).split('/')[-1]
    name = selector.split('.')[-1]
    from flan_t5x import t5x_names  # pylint: disable=g-import-not-at-top
    import importlib  # pylint: disable=g-import-not-at-top
    for module in _T5X_MODULES:
      if hasattr(importlib.import_module(f'flan_t5x.t5x_names.{module}'), name):
        del t5x_names
        return (f'no configurable {selector!r}: it is {module}.{name}; add `from t5x import {module}` '
                f'(after `from __gin__ import dynamic_registration`) to the gin file and write {module}.{name}.')
  return None


def _gin_files_near(search_paths: Sequence[str]) -> list[str]:
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  found = set()
  for root in ['.', *search_paths]:
    for path in glob.glob(os.path.join(root, '**', '*.gin'), recursive=True):
      found.add(os.path.relpath(path, root) if root != '.' else os.path.normpath(path))
  return sorted(found)


def parse_gin_file(gin_file: str) -> None:
  """gin.parse_config_file, with the file named when gin's tokenizer fails (an unclosed bracket)."""
  import tokenize  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  try:
    gin.parse_config_file(gin_file)
  except tokenize.TokenError as err:
    message, (line, _) = err.args if len(err.args) == 2 else (str(err), (None, None))
    raise ValueError(f'{gin_file} (or a file it includes): gin cannot parse it: {message}'
                     + (f' (reached at line {line})' if line else '') +
                     '. Look for an unclosed (, [, { or quote.') from None


# ------------------------------------------------------------------ values of train()


def check_train_values(total_steps: int | None, batch_sizes: Mapping[str, int]) -> None:
  """Values a type check lets through but no run can use, named by their usual macro (None: TRAIN_STEPS_RELATIVE)."""
  if total_steps is not None and total_steps < 1:
    raise ValueError(f'TRAIN_STEPS (train.total_steps) must be at least 1, got {total_steps}: a run with '
                     'no step to train would exit without training.')
  for where, batch_size in batch_sizes.items():
    if batch_size < 1:
      raise ValueError(f'BATCH_SIZE ({where}.batch_size) must be at least 1, got {batch_size}.')


def check_run_values(save_period: int | None, feature_lengths: Mapping[str, Mapping[str, int] | None]) -> None:
  """More values no run can use, found before MODEL_DIR is touched: a checkpoint period below 1 and
  feature lengths below 1 (TF would fail on them deep in the input pipeline, after the model is built)."""
  if save_period is not None and (isinstance(save_period, bool) or not isinstance(save_period, int)
                                  or save_period < 1):
    raise ValueError(f'utils.SaveCheckpointConfig.period must be a number of steps of at least 1 (or None: '
                     f'save at the end only), got {save_period!r}.')
  for where, lengths in feature_lengths.items():
    for feature, length in (lengths or {}).items():
      if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f'TASK_FEATURE_LENGTHS ({where}.task_feature_lengths) {feature!r} must be a number of '
                         f'tokens of at least 1, got {length!r}.')

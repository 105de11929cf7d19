"""T5X-style gin flags: --gin_file (repeatable), --gin_search_paths, --gin.NAME=VALUE."""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, Sequence

import gin
from absl import app
from absl import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _define_flags() -> None:
  if 'gin_file' in flags.FLAGS:
    return
  flags.DEFINE_multi_string('gin_file', default=None, help='Gin config file; repeatable, applied in order.')
  flags.DEFINE_multi_string('gin_bindings', default=[], help='Individual gin bindings, applied last.')
  flags.DEFINE_list('gin_search_paths', default=['.'],
                    help='Directories searched for gin files and `include`s (the repo root is always added).')
  # As t5x.train's flag: where `USE_CACHED_TASKS = True` finds tasks cached by
  # `python -m seqio.scripts.cache_tasks_main --output_cache_dir=DIR`.
  flags.DEFINE_list('seqio_additional_cache_dirs', default=[],
                    help='Directories to search for SeqIO-cached tasks (cache_tasks_main --output_cache_dir).')


def rewrite_gin_args(args: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE` (as t5x.gin_utils)."""
  out = []
  for arg in args:
    if arg.startswith('--gin.'):
      if '=' not in arg:
        raise ValueError(f'Gin override {arg!r} needs the form --gin.NAME=VALUE.')
      name, value = arg[len('--gin.'):].split('=', 1)
      arg = f'--gin_bindings={name} = {value}'
    out.append(arg)
  return out


def _serve_t5x_names() -> None:
  """T5X's gin names in this process (flan_t5x/t5x_names): `t5x.*` and T5X's include files."""
  from flan_t5x import t5x_names  # pylint: disable=g-import-not-at-top
  t5x_names.install()
  # T5X's include paths (`t5x/configs/runs/finetune.gin`, ...) are read from flan_t5x's versions,
  # ahead of every search path, so a T5X checkout in the current directory does not shadow them.
  # gin only appends file readers, hence its list directly.
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  if _read_served_t5x_file not in [reader for reader, _ in readers]:
    readers.insert(0, (_read_served_t5x_file, _is_served_t5x_file))


def _served_t5x_path(path: str) -> str | None:
  from flan_t5x import t5x_names  # pylint: disable=g-import-not-at-top
  if os.path.isabs(path) or not path.startswith('t5x/'):
    return None
  served = os.path.join(t5x_names.GIN_DIR, path)
  return served if os.path.isfile(served) else None


def _is_served_t5x_file(path: str) -> bool:
  return _served_t5x_path(path) is not None


def _read_served_t5x_file(path: str):
  return open(_served_t5x_path(path), encoding='utf-8')


def _check_unsupported_bindings() -> None:
  """A binding of a T5X-only configurable (seqio.Evaluator, ...) would be silently ignored: refuse it."""
  import seqio  # pylint: disable=g-import-not-at-top
  from flan_t5x import t5x_names  # pylint: disable=g-import-not-at-top
  for scope, selector in list(gin.config._CONFIG):  # pylint: disable=protected-access
    wrapped = gin.config._REGISTRY[selector].wrapped  # pylint: disable=protected-access
    module = getattr(wrapped, '__module__', '') or ''
    if module.split('.')[0] != 'seqio' or (isinstance(wrapped, type) and issubclass(wrapped, seqio.Vocabulary)):
      continue
    name = f'seqio.{getattr(wrapped, "__name__", selector)}'
    where = f'{scope}/{selector}' if scope else selector
    bound = set(gin.config._CONFIG[(scope, selector)])  # pylint: disable=protected-access
    honoured = set(t5x_names.HONOURED_SEQIO.get(name, ()))
    if not scope and bound <= honoured:
      continue
    unhonoured = sorted(bound - honoured)
    where += f'.{unhonoured[0]}' if unhonoured and name in t5x_names.HONOURED_SEQIO else ''
    raise ValueError(f'Gin binds {where}: ' + (t5x_names.unsupported_binding_hint(name)
                                                or f'flan_t5x never calls {name}, so the binding would be ignored.'))


def _check_refused_values() -> None:
  """Values flan_t5x cannot use (`refusal` on its config classes and the learning-rate schedule:
  T5X values it does not honour, impossible numbers), refused at parse time in one line, before any
  work."""
  for (_, selector), params in list(gin.config._CONFIG.items()):  # pylint: disable=protected-access
    wrapped = gin.config._REGISTRY[selector].wrapped  # pylint: disable=protected-access
    refusal = getattr(wrapped, 'refusal', None)  # config classes, and functions such as the LR schedule
    if not callable(refusal):
      continue
    for name, value in params.items():
      if isinstance(value, gin.config.ConfigurableReference):  # macros too
        continue  # resolved at call time: checked when the object is built
      message = refusal(name, value)
      if message:
        raise ValueError(message)


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              gin_search_paths: Sequence[str] = ('.',), finalize: bool = True,
              strict_macros: bool = False, job: str = 'train') -> None:
  """Parses files then bindings with gin's real parser; unknown names raise at parse time.

  `job` ('train', 'eval' or 'infer') is what `import __main__` means in the files, as under T5X's
  scripts. A T5X binding flan_t5x lacks fails here, naming the flan_t5x equivalent if there is one.
  """
  from flan_t5x import config_checks  # pylint: disable=g-import-not-at-top
  from flan_t5x import t5x_names  # pylint: disable=g-import-not-at-top
  _serve_t5x_names()
  for path in list(gin_search_paths) + [REPO_ROOT]:
    gin.add_config_file_search_path(os.path.abspath(path))
  # `import __main__ as <job>_script` in T5X-form files names T5X's entry point of the job while
  # the files are parsed (gin registers the function itself; printing the config later does not
  # look it up again), so an interactive session's `__main__` is back afterwards.
  main = sys.modules['__main__']
  sys.modules['__main__'] = t5x_names.script_module(job)
  try:
    # Files first, then the command line (the order gin.parse_config_files_and_bindings uses), so
    # that with `strict_macros` (the jobs' command lines) a macro the files neither define nor use
    # is caught as a typo.
    for gin_file in gin_files:  # one at a time, so that a tokenizer error names its file
      config_checks.parse_gin_file(gin_file)
    if strict_macros:
      config_checks.check_macro_overrides(list(gin_bindings), config_checks.known_macros())
    gin.parse_config_files_and_bindings([], list(gin_bindings), finalize_config=False)
  except (ValueError, AttributeError, ImportError, NameError, SyntaxError, OSError) as e:
    hint = t5x_names.unsupported_binding_hint(str(e))
    if hint is None:
      hint = config_checks.explain_gin_error(str(e), gin_files, job, list(gin_search_paths) + [REPO_ROOT],
                                             gin_bindings)
    if hint is None and isinstance(e, ImportError) and 't5x' in str(e):
      hint = ('flan_t5x serves these T5X modules: t5x.utils, t5x.partitioning, t5x.trainer, t5x.adafactor, '
              't5x.models, t5x.decoding, t5x.optimizers, t5x.gin_utils, t5x.examples.t5.network; other T5X '
              'modules run on upstream T5X only.')
    raise one_line_config_error(e, hint) from e
  finally:
    sys.modules['__main__'] = main
  try:
    if strict_macros:
      config_checks.check_unused_macros(gin_files, list(gin_search_paths) + [REPO_ROOT])
    _check_unsupported_bindings()
    _check_refused_values()
    if finalize:
      # Before gin's own finalize hook, which names only the first missing one.
      config_checks.check_required_macros(config_checks.defined_macros())
      gin.finalize()
  except ValueError as e:
    raise one_line_config_error(e) from e


class ConfigError(ValueError):
  """A gin file or binding that cannot run, said in one line: the jobs print it as `error: ...`
  (the traceback only with --verbosity)."""


_GIN_LOCATION = re.compile(r'In (?:file "([^"]+)", line (\d+)|bindings string line \d+)')


def one_line_config_error(error: BaseException, hint: str | None = None) -> ConfigError:
  """`<file>:<line>: <what is wrong, or the hint naming the flan_t5x equivalent>` from gin's error."""
  if isinstance(error, ConfigError):
    return error
  text = str(error)
  found = _GIN_LOCATION.search(text)
  where = ''
  if found:
    where = f'{found.group(1)}:{found.group(2)}: ' if found.group(1) else 'command line (--gin.* / --gin_bindings): '
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  statement = [line for line in lines if line.strip('^ ')]  # gin ends with the binding, then a caret line
  if found and not found.group(1) and statement and not statement[-1].startswith('In bindings string'):
    # A binding is named by its own text: the line number counts the joined --gin.* flags, not what was typed.
    where += f'`{statement[-1]}`: '
  return ConfigError(where + (hint or (lines[0] if lines else type(error).__name__)))


def parse_gin_flags_from_argv(argv: Sequence[str], job: str = 'train') -> None:
  del argv
  if not flags.FLAGS.gin_file:
    raise app.UsageError('At least one --gin_file is required, e.g. --gin_file=gin/demo.gin.')
  parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings, flags.FLAGS.gin_search_paths, strict_macros=True,
            job=job)


def add_cache_dirs(cache_dirs: Sequence[str]) -> None:
  """Adds task cache directories for `use_cached=True`; a missing one is an error naming it."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  missing = [d for d in cache_dirs if not tf.io.gfile.isdir(d)]
  if missing:
    raise app.UsageError(f'--seqio_additional_cache_dirs: not a directory: {missing} (write one with '
                         '`python -m seqio.scripts.cache_tasks_main --output_cache_dir=DIR`)')
  seqio.add_global_cache_dirs(list(cache_dirs))


def start_run(output_dir_macro: str, every_host: bool = False, write_config: bool = True,
              job: str = 'train') -> str:
  """What every entry point does first: quiet logs, start the runtime (jax.distributed when this is
  one of several processes), parse gin, record the config; returns the dir.

  Orbax logs every save at INFO, so logging drops to WARNING unless --verbosity is given.
  The config is written by process 0 as config.gin (or by every host as config-<process>.gin),
  unless `write_config` is False (the job writes it where it decides to write).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from flan_t5x import checkpoints  # pylint: disable=g-import-not-at-top
  from flan_t5x import runtime  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  runtime.initialize()
  parse_gin_flags_from_argv((), job)
  add_cache_dirs(flags.FLAGS.seqio_additional_cache_dirs)
  output_dir = gin.query_parameter(output_dir_macro)
  if write_config and (every_host or jax.process_index() == 0):
    config_filename = f'config-{jax.process_index():05d}.gin' if every_host else 'config.gin'
    checkpoints.write_text_atomically(os.path.join(os.path.abspath(output_dir), config_filename),
                                      gin.config_str())
  return output_dir


def without_call_site(error: BaseException) -> str:
  """The error's message without the `In call to configurable ...` lines gin appends to it."""
  return str(error).split('\n  In call to configurable')[0]


def user_errors() -> tuple[type[BaseException], ...]:
  """The exceptions a job raises about the user's input, files or run (bad values and rows, missing or
  damaged checkpoints, a locked MODEL_DIR, a non-finite loss): reported as one `error:` line."""
  from flan_t5x import checkpoint_integrity, checkpoints, run_lock  # pylint: disable=g-import-not-at-top
  return (ValueError, OSError, FloatingPointError, run_lock.RunLockedError, checkpoints.CheckpointSaveError,
          checkpoint_integrity.DamagedCheckpointError, checkpoint_integrity.NoIntactCheckpointError)


def run(main: Callable[[list[str]], None]) -> None:
  """app.run with T5X's --gin.NAME=VALUE flags; a ConfigError is one `error:` line on stderr and
  exit status 2, another user error (`user_errors`) `error: <its class>: <message>` and exit status 1;
  the traceback only with --verbosity (e.g. --verbosity=1)."""
  from flan_t5x import runtime  # pylint: disable=g-import-not-at-top
  _define_flags()
  runtime.define_flags()

  def guarded(argv):
    try:
      main(argv)
    except ConfigError as e:
      if flags.FLAGS['verbosity'].present:
        raise
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)
    except user_errors() as e:  # what the job says about the user's input, files or run: no traceback
      if flags.FLAGS['verbosity'].present:
        raise
      print(f'error: {type(e).__name__}: {without_call_site(e)}', file=sys.stderr, flush=True)
      sys.exit(1)
  app.run(guarded, flags_parser=lambda argv: app.parse_flags_with_usage(rewrite_gin_args(argv)))

"""T5X's configurable names, resolved to flan_t5x's engine, and the T5X gin files it serves.

Gin files written for upstream T5X say `from t5x import utils`, `import __main__ as train_script`
and `include 't5x/configs/runs/finetune.gin'`. flan_t5x's jobs run those files unchanged:
`install()` makes the name `t5x` (in this process) this package, whose modules re-export
flan_t5x's objects under T5X's names (`t5x.utils.SaveCheckpointConfig` *is*
`flan_t5x.checkpoints.SaveCheckpointConfig`, so gin binds one configurable whichever name a file
uses), and `GIN_DIR` holds flan_t5x's own versions of T5X's run and model files, searched before
anything else. A T5X name flan_t5x does not implement is missing here, so gin fails on it at parse
time; `unsupported_binding_hint` names the flan_t5x equivalent where there is one.
"""

from __future__ import annotations

import os
import re
import sys
import types

GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gin')

# T5X bindings flan_t5x does not honour, and what to use instead (None: no equivalent).
# seqio bindings T5X files set that flan_t5x's evaluator honours (read by `seqio_binding`):
# Evaluator.num_examples (examples per task), Evaluator.use_memory_cache (speed only: flan_t5x holds
# the examples in memory anyway), Evaluator.logger_cls (flan_t5x writes the log table, TensorBoard
# scalars and T5X's JSONL files in any case), JSONLogger.write_n_results (examples per task in
# inference_eval/<task>-<step>.jsonl).
HONOURED_SEQIO = {'seqio.Evaluator': ('num_examples', 'use_memory_cache', 'logger_cls'),
                  'seqio.JSONLogger': ('write_n_results',)}

UNSUPPORTED = {
    'seqio.Evaluator': 'flan_t5x decodes and scores with its own evaluator, which honours '
                       'seqio.Evaluator.num_examples, use_memory_cache and logger_cls only',
    'seqio.JSONLogger': 'flan_t5x writes T5X\'s JSONL files itself; it honours seqio.JSONLogger.write_n_results',
    'seqio.TensorBoardLogger': 'flan_t5x writes TensorBoard scalars itself',
    'seqio.PyLoggingLogger': 'flan_t5x prints its results table itself',
    'adafactor.Adafactor.logical_factor_rules': 'flan_t5x factors every matrix whose dims are at least '
                                               'adafactor.Adafactor.min_dim_size_to_factor',
    'train.use_hardware_rng': 'flan_t5x always uses the software RNG (deterministic across restarts)',
    'evaluate.summarize_config_fn': None,
    'RestoreCheckpointConfig.checkpointer_cls': 'flan_t5x reads T5X orbax and classic checkpoints itself',
    'RestoreCheckpointConfig.state_transformation_fns': None,
    'train_script.precompile': 'compile ahead of time with python -m flan_t5x.plan (the train step and decode '
                               'for a TPU slice, with their memory and cost)',
    't5x/configs/runs/precompile.gin': 'compile ahead of time with python -m flan_t5x.plan',
    't5x/configs/runs/export.gin': 'export a Hugging Face checkpoint with python -m flan_t5x.convert to-hf',
    't5x/configs/runs/export_seqio.gin': 'export a Hugging Face checkpoint with python -m flan_t5x.convert to-hf',
    't5x/configs/runs/infer_from_tfexample_file.gin': 'give a JSONL file of raw inputs (INFER_INPUT_PATH, '
                                                      'gin/infer_jsonl.gin)',
    'create_task_from_tfexample_file': 'give a JSONL file of raw inputs (INFER_INPUT_PATH, gin/infer_jsonl.gin)',
    'decoding.beam_search': 'flan_t5x honours decoding.beam_search.alpha and num_decodes only',
    'decoding.temperature_sample': 'flan_t5x honours decoding.temperature_sample.temperature, topk, topp and '
                                   'num_decodes only',
    'No module named \'t5x.checkpoints\'': 'bind checkpoints through t5x.utils (SaveCheckpointConfig, '
                                           'RestoreCheckpointConfig); T5X\'s export (t5x/configs/runs/export.gin) '
                                           'has no flan_t5x equivalent: python -m flan_t5x.convert to-hf',
    'No module named \'t5x.export_lib\'': 'export a Hugging Face checkpoint with python -m flan_t5x.convert to-hf',
    'infer.summarize_config_fn': None,
}


def install() -> None:
  """Makes `import t5x...` in this process resolve to flan_t5x's T5X names (idempotent).

  Raises RuntimeError if upstream T5X is already imported here: each engine runs in its own process.
  """
  current = sys.modules.get('t5x')
  this = sys.modules[__name__]
  if current is this:
    return
  if current is not None:
    raise RuntimeError(
        f'Upstream T5X ({getattr(current, "__file__", "?")}) is imported in this process, and flan_t5x '
        'resolves the gin name `t5x` to its own engine: run flan_t5x\'s jobs in a process of their own '
        '(python -m flan_t5x.train|eval|infer), and T5X\'s with python -m t5x.train|eval|infer.')
  sys.modules['t5x'] = this


def unsupported_binding_hint(message: str) -> str | None:
  """A hint for gin's error about a T5X binding flan_t5x lacks, or None if it is not one."""
  # The block form (`utils.RestoreCheckpointConfig:` / `  mode = ...`) is reported by gin as
  # "Configurable 'X' doesn't have a parameter named 'Y'": the binding is X.Y either way.
  message = re.sub(r"Configurable '([\w./]+)' doesn't have a parameter named '(\w+)'", r"\1.\2 (\g<0>)", message)
  for name, equivalent in UNSUPPORTED.items():
    if name in message:
      what = 'module' if name.startswith('No module') else 'file' if name.endswith('.gin') else 'binding'
      hint = f'flan_t5x does not support the T5X {what} {name.split(" named ")[-1]}'
      return hint + (f'; instead: {equivalent}.' if equivalent else '.')
  return None


def bound_parameter(configurable, parameter: str):
  """The value gin binds to `configurable`'s `parameter` (a macro such as %EVALUATOR_NUM_EXAMPLES
  resolved to its value), or None where nothing binds it."""
  import gin  # pylint: disable=g-import-not-at-top
  try:
    value = gin.get_bindings(configurable).get(parameter)
  except ValueError:  # nothing binds it
    return None
  if isinstance(value, gin.config.ConfigurableReference):
    value = value.scoped_configurable_fn()
  return value


def seqio_binding(configurable: str, parameter: str):
  """The value gin binds to a honoured seqio parameter (HONOURED_SEQIO), or None."""
  import seqio  # pylint: disable=g-import-not-at-top
  target = {'seqio.Evaluator': seqio.Evaluator, 'seqio.JSONLogger': seqio.JSONLogger}[configurable]
  return bound_parameter(target, parameter)


def examples_per_task(given: int | None, macro: str) -> int | None:
  """`given` (flan_t5x's macro) or T5X's seqio.Evaluator.num_examples; both set and different: an error."""
  bound = seqio_binding('seqio.Evaluator', 'num_examples')
  if given is not None and bound is not None and given != bound:
    raise ValueError(f'{macro} = {given} and seqio.Evaluator.num_examples = {bound}: they set the same thing '
                     '(examples per task); keep one.')
  return given if given is not None else bound


def check_evaluator_cls(cls, where: str) -> None:
  """T5X's `inference_evaluator_cls`: seqio.Evaluator (T5X's default) is what flan_t5x's evaluator
  reproduces; another class is refused."""
  import seqio  # pylint: disable=g-import-not-at-top
  if cls is not None and not (isinstance(cls, type) and issubclass(cls, seqio.Evaluator)
                              and cls.__name__ == 'Evaluator'):
    raise ValueError(f'{where}.inference_evaluator_cls = {cls!r}: flan_t5x evaluates as seqio.Evaluator '
                     '(T5X\'s default) only; remove the binding.')


def check_restore_for_reading(restore_cfg, job: str) -> None:
  """eval / infer read CHECKPOINT_PATH under the model's own names. T5X refuses fallback_to_scratch
  there (no init_rng); flan_t5x also refuses assignment_map there, naming the training-run way."""
  if restore_cfg.fallback_to_scratch:
    raise ValueError(f'utils.RestoreCheckpointConfig.fallback_to_scratch = True: {job} evaluates a checkpoint, '
                     'it initializes nothing (T5X refuses it too: no init_rng); remove the binding.')
  if restore_cfg.assignment_map is not None:
    raise ValueError(f"utils.RestoreCheckpointConfig.assignment_map: flan_t5x's {job} reads the checkpoint under "
                     "the model's names; apply the map where training starts (train's INITIAL_CHECKPOINT_PATH "
                     'with this assignment_map) and give that run\'s checkpoint as CHECKPOINT_PATH.')


def script_module(job: str) -> types.ModuleType:
  """The module gin's `import __main__ as <job>_script` names in flan_t5x's `job` (T5X's signatures)."""
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f'flan_t5x.t5x_names.{job}_script')

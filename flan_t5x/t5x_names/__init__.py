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
import sys
import types

GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gin')

# T5X bindings flan_t5x does not honour, and what to use instead (None: no equivalent).
UNSUPPORTED = {
    'seqio.Evaluator': 'flan_t5x decodes and scores with its own evaluator; the number of examples '
                       'per task is EVALUATOR_NUM_EXAMPLES (training) or EVAL_MAX_EXAMPLES (eval)',
    'seqio.JSONLogger': 'flan_t5x writes <task>-predictions.jsonl itself (flan_t5x.eval)',
    'seqio.TensorBoardLogger': 'flan_t5x writes TensorBoard scalars itself',
    'seqio.PyLoggingLogger': 'flan_t5x prints its results table itself',
    'utils.RestoreCheckpointConfig.mode': 'flan_t5x restores the checkpoint at path (a MODEL_DIR means '
                                          'its newest step)',
    'utils.RestoreCheckpointConfig.dtype': 'flan_t5x restores parameters in float32',
    'utils.SaveCheckpointConfig.dtype': 'flan_t5x saves parameters in float32',
    'adafactor.Adafactor.logical_factor_rules': 'flan_t5x factors every matrix whose dims are at least '
                                               'adafactor.Adafactor.min_dim_size_to_factor',
    'train.use_hardware_rng': 'flan_t5x always uses the software RNG (deterministic across restarts)',
    'train.summarize_config_fn': 'flan_t5x writes config.gin and operative_config.gin itself',
    'train.inference_evaluator_cls': 'flan_t5x decodes with its own evaluator',
    'evaluate.inference_evaluator_cls': 'flan_t5x decodes with its own evaluator',
    'evaluate.summarize_config_fn': None,
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
  for name, equivalent in UNSUPPORTED.items():
    if name in message:
      hint = f'flan_t5x does not support the T5X binding {name!r}'
      return hint + (f'; instead: {equivalent}.' if equivalent else '.')
  return None


def script_module(job: str) -> types.ModuleType:
  """The module gin's `import __main__ as <job>_script` names in flan_t5x's `job` (T5X's signatures)."""
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f'flan_t5x.t5x_names.{job}_script')

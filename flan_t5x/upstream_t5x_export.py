"""Write a checkpoint in upstream T5X's orbax layout, so `python -m t5x.train` continues from it.

T5X (orbax) reads `checkpoint_<step>/state`, a PyTree `{'target': params, 'state': {'step', 'param_states'}}`
whose `param_states` hold T5X Adafactor's statistics per parameter (`v_row`, `v_col`, `v`, `m`). The
parameter names are T5X's already. The statistics are written as T5X initialises them (zeros, shaped
by T5X's standard logical factor rules: a parameter with a ROW axis (`embed`) and a COLUMN axis
(`vocab`, `mlp`, `heads`, `kv`, `joined_kv`) gets factored `v_row` / `v_col`, any other a full `v`):
the run continues from the parameters and step with fresh second moments, as a run started from
INITIAL_CHECKPOINT_PATH does in either engine. Adafactor's update clipping bounds the first steps.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

PyTree = Any
_ROW_AXES = ('embed',)
_COLUMN_AXES = ('vocab', 'mlp', 'heads', 'kv', 'joined_kv', 'mlp_activations')


def adafactor_zero_state(shape: tuple[int, ...], logical_axes: tuple[str | None, ...]) -> dict[str, np.ndarray]:
  """T5X Adafactor's initial statistics (beta1 None) for one parameter of `shape` and `logical_axes`."""
  if len(logical_axes) != len(shape):
    raise ValueError(f'logical axes {logical_axes} do not match shape {shape}')
  rows = [i for i, axis in enumerate(logical_axes) if axis in _ROW_AXES]
  columns = [i for i, axis in enumerate(logical_axes) if axis in _COLUMN_AXES]
  one = np.zeros((1,), np.float32)
  if rows and columns and len(rows) + len(columns) == len(shape):
    return {'m': one, 'v': one, 'v_row': np.zeros(np.delete(shape, columns), np.float32),
            'v_col': np.zeros(np.delete(shape, rows), np.float32)}
  return {'m': one, 'v': np.zeros(shape, np.float32), 'v_row': one, 'v_col': one}


def upstream_state(params: PyTree, logical_specs: PyTree, step: int) -> dict:
  """The tree T5X saves under `state`, for these parameters."""
  param_states = jax.tree.map(lambda p, spec: adafactor_zero_state(np.shape(p), tuple(spec)), params, logical_specs,
                              is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  return {'target': jax.tree.map(lambda p: np.asarray(p, np.float32), params),
          'state': {'step': np.int32(step), 'param_states': param_states}}


def save(params: PyTree, logical_specs: PyTree, step: int, model_dir: str) -> str:
  """Writes MODEL_DIR/checkpoint_<step> in T5X's orbax layout; returns its path. Refuses to overwrite."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  model_dir = os.path.abspath(model_dir)
  path = os.path.join(model_dir, f'checkpoint_{step}')
  if os.path.exists(path):
    raise FileExistsError(f'{path} exists')
  options = ocp.CheckpointManagerOptions(step_prefix='checkpoint', create=True)
  with ocp.CheckpointManager(model_dir, item_names=('state',), options=options) as manager:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(upstream_state(params, logical_specs, step))))
    manager.wait_until_finished()
  return path


def save_for_config(params: PyTree, config, step: int, model_dir: str) -> str:
  """`save` with the logical axes of the T5Config's parameters."""
  from flan_t5x import models, network, train_state  # pylint: disable=g-import-not-at-top
  model = models.EncoderDecoderModel(network.Transformer(config))
  return save(params, train_state.param_logical_specs(model), step, model_dir)

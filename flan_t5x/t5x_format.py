"""Import parameters from T5X checkpoints: the classic layout and the orbax layout.

Classic (t5x.checkpoints.Checkpointer, version 3): `checkpoint_<step>/checkpoint` is a msgpack of
`{'version': 3, 'optimizer': {'target': params, 'state': {...}}}` in which every partitioned array is
a TensorStore spec (a dict, `kvstore.path` relative to the step directory) pointing at a zarr array
beside it; unpartitioned arrays are inline. Orbax layout: `checkpoint_<step>/state/` holding
`_METADATA` and a tree `{'target': ..., 'state': ...}`. Only `target` (the parameters) is read.
Paths may be anything TensorStore and tf.io.gfile open (local, gs://).
"""
from __future__ import annotations

import os
import re
from typing import Any

import jax.numpy as jnp
import numpy as np

PyTree = Any
_STEP_DIR = re.compile(r'^checkpoint_(\d+)$')


def _join(base: str, *parts: str) -> str:
  return '/'.join([base.rstrip('/')] + list(parts)) if '://' in base else os.path.join(base, *parts)


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def _latest_step_dir(model_dir: str) -> str | None:
  gfile = _gfile()
  steps = [(int(m.group(1)), name.rstrip('/')) for name in gfile.listdir(model_dir)
           if (m := _STEP_DIR.match(name.rstrip('/')))]
  return _join(model_dir, max(steps)[1]) if steps else None


def resolve_step_dir(path: str) -> str:
  """A T5X model dir (latest step), a `checkpoint_<step>` dir, or its `checkpoint` file."""
  gfile = _gfile()
  if not gfile.isdir(path) and os.path.basename(path.rstrip('/')) == 'checkpoint':
    return os.path.dirname(path.rstrip('/'))
  if gfile.exists(_join(path, 'checkpoint')) or gfile.exists(_join(path, 'state', '_METADATA')):
    return path
  latest = _latest_step_dir(path) if gfile.isdir(path) else None
  if latest:
    return latest
  raise FileNotFoundError(f'{path}: not a T5X checkpoint (expected checkpoint_<step>/checkpoint or '
                          'checkpoint_<step>/state/_METADATA)')


def is_classic(path: str) -> bool:
  try:
    step_dir = resolve_step_dir(path)
  except FileNotFoundError:
    return False
  gfile = _gfile()
  return gfile.exists(_join(step_dir, 'checkpoint')) and not gfile.isdir(_join(step_dir, 'checkpoint'))


def is_t5x_orbax(path: str) -> bool:
  try:
    step_dir = resolve_step_dir(path)
  except FileNotFoundError:
    return False
  return _gfile().exists(_join(step_dir, 'state', '_METADATA'))


def _kvstore(step_dir: str, relative: str) -> dict:
  full = _join(step_dir, relative)
  if full.startswith('gs://'):
    bucket, _, key = full[len('gs://'):].partition('/')
    return {'driver': 'gcs', 'bucket': bucket, 'path': key}
  return {'driver': 'file', 'path': full}


def _read_tensorstore(spec: dict, step_dir: str) -> np.ndarray:
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  spec = dict(spec)
  if 'kvstore' in spec and isinstance(spec['kvstore'], dict):
    relative = spec['kvstore'].get('path', '')
  else:  # tensorstore < 0.1.14 wrote the path at the top level
    relative = spec.pop('path', '')
  spec['kvstore'] = _kvstore(step_dir, relative)
  metadata = dict(spec.get('metadata', {}))
  for key in ('chunks', 'compressor'):  # stored in .zarray; opening must not contradict it
    metadata.pop(key, None)
  spec['metadata'] = metadata
  return ts.open(spec, open=True).result().read().result()


def _is_spec(leaf) -> bool:
  return isinstance(leaf, dict) and 'driver' in leaf


def _materialize(tree, step_dir: str, dtype, path=()):
  if _is_spec(tree):
    array = _read_tensorstore(tree, step_dir)
  elif isinstance(tree, dict):
    return {k: _materialize(v, step_dir, dtype, path + (k,)) for k, v in tree.items()}
  else:
    array = np.asarray(tree)
  if not jnp.issubdtype(array.dtype, jnp.floating):  # numpy alone does not know bfloat16
    raise ValueError(f'{step_dir}: parameter {"/".join(path)} has dtype {array.dtype}, not floating')
  return array.astype(dtype) if dtype is not None else array


def load_classic(path: str, dtype: Any = np.float32) -> tuple[PyTree, int]:
  """(params, step) of a classic T5X checkpoint; the optimizer state is not read."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  step_dir = resolve_step_dir(path)
  with _gfile().GFile(_join(step_dir, 'checkpoint'), 'rb') as f:
    contents = serialization.msgpack_restore(f.read())
  version = contents.get('version', 0)
  if version not in (0, 3):
    raise ValueError(f'{step_dir}/checkpoint: T5X checkpoint version {version}; versions 0 and 3 are '
                     'supported (version 2 stored bfloat16 as uint16)')
  state = contents['optimizer'] if 'optimizer' in contents else contents
  if 'target' not in state:
    raise ValueError(f'{step_dir}/checkpoint: no `target` (parameters); keys {sorted(state)}')
  step = state.get('state', {}).get('step', 0)
  return _materialize(state['target'], step_dir, dtype), int(np.asarray(step))


def load_orbax(path: str, dtype: Any = np.float32) -> tuple[PyTree, int]:
  """(params, step) of an orbax-layout T5X checkpoint (`checkpoint_<step>/state/`)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step_dir = resolve_step_dir(path)
  state_dir = _join(step_dir, 'state')
  tree = orbax_tree(state_dir)
  with ocp.PyTreeCheckpointer() as checkpointer:
    if 'target' not in tree:
      raise ValueError(f'{state_dir}: no `target` in the checkpoint tree; keys {sorted(tree)}')
    restore_args = {'target': _numpy_restore_args(tree['target'], ocp)}
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item={'target': tree['target']}, restore_args=restore_args, partial_restore=True))
  step_match = _STEP_DIR.match(os.path.basename(step_dir.rstrip('/')))
  return _materialize(restored['target'], step_dir, dtype), int(step_match.group(1)) if step_match else 0


def orbax_tree(state_dir: str) -> dict:
  """The structure (array metadata leaves) of an orbax PyTree checkpoint directory."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(os.path.abspath(state_dir)))
  return dict(metadata.tree)


def _numpy_restore_args(tree, ocp):
  if isinstance(tree, dict):
    return {k: _numpy_restore_args(v, ocp) for k, v in tree.items()}
  return ocp.RestoreArgs(restore_type=np.ndarray)

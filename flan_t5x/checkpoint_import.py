"""INITIAL_CHECKPOINT_PATH in any supported format, detected from what the path holds.

- a Hugging Face directory (config.json + safetensors or pytorch_model.bin),
- a classic T5X checkpoint (msgpack `checkpoint` + TensorStore arrays),
- an orbax-layout T5X checkpoint (`state/` with a `target` tree),
- a flan-t5x MODEL_DIR or `checkpoint_<step>` (orbax, `params` tree).
Parameters are checked against the model (shapes, vocabulary size) and placed on the model's shardings.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging

from flan_t5x import checkpoints, hf_format, network, t5x_format

PyTree = Any
FORMATS = ('huggingface', 't5x_classic', 't5x_orbax', 'flan_t5x')


def detect_format(path: str) -> str:
  if os.path.isdir(path) and hf_format.is_hf_checkpoint(path):
    return 'huggingface'
  if t5x_format.is_classic(path):
    return 't5x_classic'
  if t5x_format.is_t5x_orbax(path) and _orbax_tree_has(path, 'target'):
    return 't5x_orbax'
  try:
    checkpoints.resolve_state_dir(path)
  except ValueError:
    raise FileNotFoundError(
        f'{path}: no checkpoint found. Expected a Hugging Face directory (config.json + '
        'model.safetensors), a T5X checkpoint_<step> directory, or a flan-t5x MODEL_DIR') from None
  return 'flan_t5x'


def _orbax_tree_has(path: str, key: str) -> bool:
  state_dir = os.path.join(t5x_format.resolve_step_dir(path), 'state')
  return key in t5x_format.orbax_tree(state_dir)


def load_params_and_step(path: str, config: network.T5Config | None = None,
                         dtype: Any = np.float32) -> tuple[PyTree, int, str]:
  """(numpy params, step, format) of any supported checkpoint."""
  fmt = detect_format(path)
  if fmt == 'huggingface':
    params, _ = hf_format.load(path, config, dtype)
    return params, 0, fmt
  if fmt == 't5x_classic':
    params, step = t5x_format.load_classic(path, dtype)
  elif fmt == 't5x_orbax':
    params, step = t5x_format.load_orbax(path, dtype)
  else:
    params, step = checkpoints.read_params(path, dtype=dtype)
  if config is not None:
    check_against_config(params, config, path)
  return params, step, fmt


def load_params(path: str, config: network.T5Config | None = None, dtype: Any = np.float32) -> PyTree:
  return load_params_and_step(path, config, dtype)[0]


def check_against_config(params: PyTree, config: network.T5Config, source: str) -> None:
  """Every parameter the model has, with the model's shapes; one error lists all differences."""
  embedding = params.get('token_embedder', {}).get('embedding')
  if embedding is not None:
    hf_format.check_vocab_size(embedding.shape[0], config.vocab_size, source)
  expected = {'/'.join(path): hf_format.expected_shape(path, config)
              for _, path, _ in hf_format.name_map(config)}
  got = {'/'.join(str(k.key) for k in path): np.shape(leaf)
         for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(expected) - set(got))
  unexpected = sorted(set(got) - set(expected))
  mismatched = [f'{k}: {got[k]} (model expects {expected[k]})' for k in sorted(set(got) & set(expected))
                if tuple(got[k]) != tuple(expected[k])]
  hf_format.raise_if_mismatched(f'{source}: checkpoint parameters do not match the model '
                                'configuration', missing, unexpected, mismatched)


def place(params: PyTree, abstract_params: PyTree) -> PyTree:
  """numpy params -> device arrays with the dtypes and shardings of `abstract_params`."""
  def put(value, abstract):
    value = np.asarray(value, dtype=abstract.dtype)
    sharding = getattr(abstract, 'sharding', None)
    return jax.device_put(value, sharding) if sharding is not None else jax.numpy.asarray(value)
  return jax.tree_util.tree_map(put, params, abstract_params)


def restore_params(path: str, abstract_params: PyTree, model_config: network.T5Config | None = None
                   ) -> tuple[PyTree, int]:
  """Params placed on `abstract_params`' shardings, and the step, of a checkpoint in any format.

  Hugging Face and T5X checkpoints are imported (shapes and vocabulary size checked against
  `model_config` first); a flan-t5x checkpoint is restored shard by shard.
  """
  fmt = detect_format(path)
  if fmt == 'flan_t5x':
    return checkpoints.read_params(path, abstract_params)
  params, step, _ = load_params_and_step(path, model_config)
  logging.info('Imported %s parameters from %s.', fmt, path)
  return place(params, abstract_params), step


def save_params_checkpoint(params: PyTree, model_dir: str, step: int = 0) -> str:
  """Writes MODEL_DIR/checkpoint_<step>/state with {'params', 'step'} (an INITIAL_CHECKPOINT_PATH)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.abspath(model_dir), f'{checkpoints.STEP_PREFIX}_{step}', 'state')
  if os.path.exists(path):
    raise FileExistsError(f'{path} exists')
  with ocp.PyTreeCheckpointer() as checkpointer:
    checkpointer.save(path, args=ocp.args.PyTreeSave({'params': params, 'step': np.int32(step)}))
  return os.path.dirname(path)


def leaves(tree: PyTree) -> list:
  return jax.tree_util.tree_leaves(tree)

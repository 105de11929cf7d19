"""INITIAL_CHECKPOINT_PATH in any supported format, detected from what the path holds.

- a Hugging Face directory (config.json + safetensors or pytorch_model.bin),
- a classic T5X checkpoint (msgpack `checkpoint` + TensorStore arrays),
- an orbax-layout T5X checkpoint (`state/` with a `target` tree),
- a flan-t5x MODEL_DIR or `checkpoint_<step>` (orbax, `params` tree).
Parameters are checked against the model (shapes, vocabulary size) and placed on the model's shardings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import jax
import numpy as np
from absl import logging

from flan_t5x import assignment_map, checkpoints, hf_format, network, t5x_format

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


def newest_t5x_step_dir(model_dir: str) -> str | None:
  """MODEL_DIR's newest checkpoint_<step>, if T5X wrote it (orbax or classic layout); else None."""
  for step in reversed(checkpoints.saved_steps(model_dir)):
    path = os.path.join(model_dir, f'{checkpoints.STEP_PREFIX}_{step}')
    if t5x_format.is_classic(path) or (t5x_format.is_t5x_orbax(path) and _orbax_tree_has(path, 'target')):
      return path
    if os.listdir(path):  # flan_t5x's (or unknown): not a T5X run to resume
      return None
  return None


# ------------------------------------------------------------------------------ fingerprints

FINGERPRINT_KEYS = ('format', 'step', 'sha256')  # what identifies a checkpoint; its path is informative
_SAMPLE_BYTES = 1 << 20
_STEP_DIR = re.compile(rf'^{checkpoints.STEP_PREFIX}_(\d+)$')


def _hash_file(digest, path: str) -> None:
  """Adds a file's name, size, first and last MiB to `digest` (bounded cost for any file)."""
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    size = tf.io.gfile.stat(path).length
    open_file = lambda: tf.io.gfile.GFile(path, 'rb')
  else:
    size = os.path.getsize(path)
    open_file = lambda: open(path, 'rb')
  digest.update(f'{os.path.basename(path)}\0{size}\0'.encode())
  with open_file() as f:
    digest.update(f.read(_SAMPLE_BYTES))
    if size > 2 * _SAMPLE_BYTES:
      f.seek(size - _SAMPLE_BYTES)
    digest.update(f.read())


def _top_level_files(directory: str) -> list[str]:
  if '://' in directory:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    names = [n for n in tf.io.gfile.listdir(directory) if not n.endswith('/')]
    return [t5x_format._join(directory, n) for n in sorted(names)  # pylint: disable=protected-access
            if not tf.io.gfile.isdir(t5x_format._join(directory, n))]  # pylint: disable=protected-access
  return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
          if os.path.isfile(os.path.join(directory, n))]


def checkpoint_fingerprint(path: str) -> dict:
  """Which checkpoint `path` means now: {'path', 'format', 'resolved', 'step', 'sha256'}.

  `resolved` is the concrete checkpoint (a MODEL_DIR resolves to its latest step); load from it so
  that what is loaded is what was fingerprinted. `sha256` hashes the checkpoint's metadata files:
  the top-level files of an orbax `state/` dir (tree, array metadata, OCDBT manifest, save
  timestamps), the msgpack `checkpoint` file of a classic T5X checkpoint, or a Hugging Face
  config.json, safetensors index and each weight file's size, header and last bytes. Each file
  adds at most 2 MiB, so this is cheap for any model size. Two saves never share a hash (orbax
  records the save time); the same checkpoint read twice always does.
  """
  fmt = detect_format(path)
  if fmt == 'huggingface':
    resolved = os.path.abspath(path)
    names = [hf_format.CONFIG_FILE, hf_format.SAFETENSORS_INDEX, hf_format.SAFETENSORS_FILE, hf_format.TORCH_FILE]
    index_path = os.path.join(resolved, hf_format.SAFETENSORS_INDEX)
    if os.path.isfile(index_path):
      with open(index_path) as f:
        names += sorted(set(json.load(f)['weight_map'].values()))
    files = [os.path.join(resolved, n) for n in names if os.path.isfile(os.path.join(resolved, n))]
  elif fmt == 't5x_classic':
    resolved = t5x_format.resolve_step_dir(path)
    files = [t5x_format._join(resolved, 'checkpoint')]  # pylint: disable=protected-access
  elif fmt == 't5x_orbax':
    resolved = t5x_format.resolve_step_dir(path)
    files = _top_level_files(t5x_format._join(resolved, 'state'))  # pylint: disable=protected-access
  else:
    state_dir = checkpoints.resolve_state_dir(path)
    resolved = os.path.dirname(state_dir)
    files = _top_level_files(state_dir)
  if '://' not in resolved:
    resolved = os.path.abspath(resolved)
  digest = hashlib.sha256()
  for file_path in files:
    _hash_file(digest, file_path)
  step = _STEP_DIR.match(os.path.basename(resolved.rstrip('/')))
  return {'path': path if '://' in path else os.path.abspath(path), 'format': fmt, 'resolved': resolved,
          'step': int(step.group(1)) if step else None, 'sha256': digest.hexdigest()}


def same_checkpoint(a: dict | None, b: dict | None) -> bool:
  """Whether two fingerprints name the same checkpoint (format, step and metadata hash; not the path)."""
  if not a or not b:
    return False
  return all(a.get(k) == b.get(k) for k in FINGERPRINT_KEYS)


def describe_checkpoint(fingerprint: dict | None) -> str:
  if not fingerprint:
    return '(none recorded)'
  if fingerprint.get('resolved') is None:
    return f"in-memory parameters (sha256 {fingerprint.get('sha256', '?')[:12]})"
  return (f"{fingerprint['resolved']} ({fingerprint['format']}, step {fingerprint['step']}, "
          f"sha256 {fingerprint['sha256'][:12]})")


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
  got = {name: np.shape(leaf) for name, leaf in _named_leaves(params).items()}
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


def restore_params_mapped(path: str, abstract_params: PyTree, rules: Any, fallback_to_scratch: bool,
                          initial_params: Any) -> tuple[PyTree, int, str]:
  """(params, step, summary) read through T5X's assignment_map / fallback_to_scratch (see assignment_map).

  `initial_params()` gives freshly initialized parameters, called only when some are not read.
  """
  checkpoint_params, step, _ = load_params_and_step(path)
  checkpoint_flat, abstract_flat = _named_leaves(checkpoint_params), _named_leaves(abstract_params)
  the_plan = assignment_map.plan(list(abstract_flat), list(checkpoint_flat), rules, fallback_to_scratch)
  fresh = _named_leaves(initial_params()) if None in the_plan.sources.values() else {}
  flat = assignment_map.assemble(the_plan, checkpoint_flat, fresh,
                                 {name: leaf.shape for name, leaf in abstract_flat.items()})
  tree = jax.tree_util.tree_map_with_path(lambda path, _: flat[_path_name(path)], abstract_params)
  return place(tree, abstract_params), (step if the_plan.step_from_checkpoint else 0), the_plan.summary()


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _named_leaves(tree: PyTree) -> dict[str, Any]:
  """{'encoder/layers_0/attention/query/kernel': leaf, ...}: T5X's parameter names."""
  return {_path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


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

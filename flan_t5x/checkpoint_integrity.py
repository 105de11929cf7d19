"""Checksums of complete checkpoints, checked before a restore.

Orbax makes a save atomic (temporary directory, renamed when every process has
written), so a killed save never looks complete. It does not notice a file that was
truncated, deleted or overwritten *after* the save: tensorstore reads whatever bytes
are there. So when every process has written a save, and before orbax renames its temporary directory,
process 0 records every file's size and CRC32 in `checkpoint_<step>/flan_t5x_manifest.json`
(written atomically): a complete checkpoint always has its manifest. A restore first compares
the files with it.

A checkpoint without a manifest (written before this existed, or a parameters-only checkpoint
from `checkpoint_import`) is left to orbax's own checks, and a restore failure is still reported
as damage with the path; a training restore then writes its manifest and says so.

CRC32, not a cryptographic hash: the threat is a broken disk or a partial copy, and
zlib's CRC reads at memory speed, so checking costs one extra read of the checkpoint.
"""

from __future__ import annotations

import json
import os
import zlib

MANIFEST = 'flan_t5x_manifest.json'
_CHUNK_BYTES = 1 << 22


class DamagedCheckpointError(RuntimeError):
  """A checkpoint that exists but cannot be trusted; the message names the path and the reason."""

  def __init__(self, path: str, reason: str, hint: str = ''):
    message = f'Damaged checkpoint {path}: {reason}.'
    super().__init__(f'{message} {hint}'.strip())
    self.path, self.reason = path, reason


class NoIntactCheckpointError(RuntimeError):
  """fallback_to_previous moved every checkpoint aside: the run stops instead of starting afresh."""


def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK_BYTES):
      crc = zlib.crc32(chunk, crc)
  return crc


# Written by orbax's commit after the manifest (commit time, success marker); no tensor data.
_WRITTEN_AT_COMMIT = ('_CHECKPOINT_METADATA', 'commit_success.txt')


def _files(step_dir: str) -> list[str]:
  """Paths relative to `step_dir`, sorted, without the manifest itself and the commit's own files."""
  found = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      relative = os.path.relpath(os.path.join(root, name), step_dir)
      if relative not in (MANIFEST,) + _WRITTEN_AT_COMMIT and not name.startswith(MANIFEST + '.tmp'):
        found.append(relative)
  return sorted(found)


def describe(step_dir: str) -> dict[str, dict[str, int]]:
  return {relative: {'size': os.path.getsize(os.path.join(step_dir, relative)),
                     'crc32': _crc32(os.path.join(step_dir, relative))} for relative in _files(step_dir)}


# What a manifest written at a restore says of itself (its 'unverified' field): its checksums are of
# the files as found then, not as saved.
RESTORE_ORIGIN = ('written at a restore: the checkpoint had no manifest, so its files could not be compared '
                  'with checksums from its save; orbax read it, its shapes matched the model and every tensor '
                  'was finite')


def manifest_text(step_dir: str, unverified: str | None = None) -> str:
  """The manifest of a complete checkpoint (the caller writes it atomically to MANIFEST); `unverified`
  says why its checksums do not come from the save itself."""
  manifest = {'format': 1, 'files': describe(step_dir)}
  if unverified:
    manifest['unverified'] = unverified
  return json.dumps(manifest, indent=1, sort_keys=True)


def has_manifest(step_dir: str) -> bool:
  return os.path.isfile(os.path.join(step_dir, MANIFEST))


def is_intact(step_dir: str) -> bool:
  """Whether the checkpoint has its manifest and every file matches it."""
  return has_manifest(step_dir) and not problems(step_dir)


def verified_at_save(step_dir: str) -> bool:
  """Whether the checkpoint's manifest was written by its save (checksums of the files as saved)."""
  return has_manifest(step_dir) and 'unverified' not in _load_manifest(step_dir)


def raise_if_not_finite(step_dir: str, state) -> None:
  """A checkpoint without a manifest from its save is checked for what a save never writes: a
  non-finite tensor (training stops before saving such a state) proves it damaged."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    values = np.asarray(jax.device_get(leaf))
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
      name = '/'.join(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k)))) for k in path)
      raise DamagedCheckpointError(step_dir, f'it has no checksum manifest and {name} holds non-finite values, '
                                   'which no save writes')


def _load_manifest(step_dir: str) -> dict:
  path = os.path.join(step_dir, MANIFEST)
  try:
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
    files = manifest['files']
    if not isinstance(files, dict):
      raise TypeError(f'"files" is a {type(files).__name__}, expected an object')
    return manifest
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise DamagedCheckpointError(step_dir, f'unreadable checksum manifest {path} ({err})') from None


def _read_manifest(step_dir: str) -> dict[str, dict[str, int]]:
  return _load_manifest(step_dir)['files']


def problems(step_dir: str) -> list[str]:
  """What differs from the manifest (empty: intact, or no manifest to compare with)."""
  if not os.path.isdir(step_dir):
    return [f'{step_dir} does not exist']
  if not has_manifest(step_dir):
    return []  # nothing to compare with; orbax's own read errors still name the path
  found = []
  for relative, expected in sorted(_read_manifest(step_dir).items()):
    path = os.path.join(step_dir, relative)
    if not os.path.isfile(path):
      found.append(f'{relative} is missing')
    elif os.path.getsize(path) != expected.get('size'):
      found.append(f'{relative} has {os.path.getsize(path)} bytes, expected {expected.get("size")} (truncated '
                   'or overwritten)')
    elif _crc32(path) != expected.get('crc32'):
      found.append(f'{relative} has a different CRC32 than when it was saved (corrupted)')
  return found


def verify(step_dir: str, hint: str = '') -> None:
  """Raises DamagedCheckpointError naming the first few problems of `step_dir`."""
  found = problems(step_dir)
  if found:
    shown = '; '.join(found[:3]) + (f'; and {len(found) - 3} more' if len(found) > 3 else '')
    raise DamagedCheckpointError(step_dir, shown, hint)


def quarantine(model_dir: str, step_dir: str) -> str:
  """Moves a damaged checkpoint to MODEL_DIR/damaged/ (kept for inspection, out of the step sequence)."""
  target_root = os.path.join(model_dir, 'damaged')
  os.makedirs(target_root, exist_ok=True)
  base = os.path.basename(step_dir.rstrip('/'))
  target, attempt = os.path.join(target_root, base), 1
  while os.path.exists(target):
    attempt += 1
    target = os.path.join(target_root, f'{base}.{attempt}')
  os.replace(step_dir, target)
  return target


def _names_and_shapes(tree) -> dict[str, tuple[int, ...]]:
  import jax  # pylint: disable=g-import-not-at-top
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _saved_state_tree(state_dir: str) -> dict:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  try:
    return dict(ocp.PyTreeCheckpointHandler().metadata(epath.Path(state_dir)).tree)
  except Exception as err:  # pylint: disable=broad-except  (missing or garbled orbax metadata)
    raise DamagedCheckpointError(os.path.dirname(state_dir), f'orbax could not read its metadata '
                                 f'({type(err).__name__}: {err})') from err


def saved_param_shapes(state_dir: str) -> dict[str, tuple[int, ...]]:
  """{'decoder/layers_0/mlp/wo/kernel': shape} of a saved `state` item, from orbax's metadata."""
  return _names_and_shapes(_saved_state_tree(state_dir).get('params', {}))


def raise_if_other_model(step_dir: str, abstract_params, abstract_opt_state=None, optimizer_name: str = '') -> None:
  """A checkpoint of another model (more or fewer tensors, other shapes) is a configuration mistake,
  not damage: model_mismatch.ModelMismatchError names the tensors and the likely gin setting. With
  `abstract_opt_state`, one saved with another optimizer is too (OptimizerMismatchError). Orbax's
  metadata is read once for both."""
  from flan_t5x import model_mismatch  # pylint: disable=g-import-not-at-top
  saved = _saved_state_tree(os.path.join(step_dir, 'state'))
  model_mismatch.check(step_dir, _names_and_shapes(saved.get('params', {})), _names_and_shapes(abstract_params))
  if abstract_opt_state is not None:
    _raise_if_other_optimizer(step_dir, saved.get('opt_state', {}), abstract_opt_state, optimizer_name)


def _raise_if_other_optimizer(step_dir: str, saved_opt_state, abstract_opt_state, optimizer_name: str) -> None:
  """Compares the optimizer states' tensor shapes as multisets: the same optimizer on the same model
  saves the same ones (orbax's metadata names the leaves its own way)."""
  from flan_t5x import model_mismatch  # pylint: disable=g-import-not-at-top
  saved = sorted(_names_and_shapes(saved_opt_state).values())
  wanted = sorted(_names_and_shapes(abstract_opt_state).values())
  if saved != wanted:
    raise model_mismatch.OptimizerMismatchError(
        f'{step_dir} was saved with another optimizer than this run\'s {optimizer_name} (its optimizer state '
        f'holds {len(saved)} tensors, {optimizer_name} {len(wanted)}). This is a configuration change, not '
        'damage: nothing was moved. Either resume with the optimizer that trained it (the OPTIMIZER / '
        'optimizer_def binding of its config.gin), or keep its parameters and step and start the new '
        f'optimizer from zero: train into a new MODEL_DIR with --gin.INITIAL_CHECKPOINT_PATH="\'{step_dir}\'" '
        '(the optimizer state and the input position start afresh).')

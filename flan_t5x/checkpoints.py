"""Orbax checkpoints: sharded, async, keep-N; restore order as T5X.

Layout: MODEL_DIR/checkpoint_<step>/{state, run}. `state` is the TrainState
(step, params, optimizer state) saved shard-by-shard; `run` is JSON with the
run seed and the number of training batches consumed, so a resumed run reads
the same data. Orbax writes into a temporary directory and renames it when
complete, so an interrupted save is never mistaken for a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

PyTree = Any
STEP_PREFIX = 'checkpoint'


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  period: int = 5000
  keep: int | None = None  # None keeps every checkpoint (T5X default).
  async_save: bool = True


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """`path`: INITIAL_CHECKPOINT_PATH, used only when MODEL_DIR has no checkpoint."""
  path: str | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  save: SaveCheckpointConfig = dataclasses.field(default_factory=SaveCheckpointConfig)
  restore: RestoreCheckpointConfig = dataclasses.field(default_factory=RestoreCheckpointConfig)


@dataclasses.dataclass
class RunState:
  """Host-side facts that must survive a restart along with the TrainState."""
  seed: int
  batches_consumed: int = 0


def _manager(directory: str, keep: int | None, async_save: bool, read_only: bool = False):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, step_prefix=STEP_PREFIX, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=('state', 'run'))


class Checkpointer:
  """Saves and restores TrainState + RunState under MODEL_DIR."""

  def __init__(self, model_dir: str, config: SaveCheckpointConfig, abstract_state: PyTree):
    if config.period is not None and config.period <= 0:
      raise ValueError(f'Checkpoint period must be positive, got {config.period}.')
    self.model_dir = model_dir
    self.config = config
    self.abstract_state = abstract_state
    self._manager = _manager(model_dir, config.keep, config.async_save)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: PyTree, run_state: RunState) -> None:
    step = int(jax.device_get(state.step))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(dataclasses.asdict(run_state))), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore_latest(self) -> tuple[PyTree, RunState] | None:
    step = self._manager.latest_step()
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(self.abstract_state), run=ocp.args.JsonRestore()))
    logging.info('Restored step %d from %s.', step, self.model_dir)
    return restored['state'], RunState(**restored['run'])

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def resolve_state_dir(path: str) -> str:
  """Accepts a model dir (uses its latest checkpoint), a checkpoint_<step> dir, or its `state` dir."""
  path = os.path.abspath(path)
  if os.path.basename(path) == 'state' and os.path.isdir(path):
    return path
  if os.path.isdir(os.path.join(path, 'state')):
    return os.path.join(path, 'state')
  if os.path.isdir(path):
    manager = _manager(path, keep=None, async_save=False, read_only=True)
    step = manager.latest_step()
    manager.close()
    if step is not None:
      return os.path.join(path, f'{STEP_PREFIX}_{step}', 'state')
  raise ValueError(f'No checkpoint found at INITIAL_CHECKPOINT_PATH={path!r}; expected a MODEL_DIR with '
                   f'{STEP_PREFIX}_<step>/ subdirectories or one such directory.')


def restore_params(path: str, abstract_params: PyTree,
                   model_config: Any = None) -> tuple[PyTree, int]:
  """Params (resharded to `abstract_params`' shardings) and step of a checkpoint; no optimizer state.

  Hugging Face and T5X (classic or orbax) checkpoints are detected and imported; with
  `model_config` their shapes and vocabulary size are checked against the model first.
  """
  from flan_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top  (imports this module)
  fmt = checkpoint_import.detect_format(path)
  if fmt != 'flan_t5x':
    params, step, _ = checkpoint_import.load_params_and_step(path, model_config)
    logging.info('Imported %s parameters from %s.', fmt, path)
    return checkpoint_import.place(params, abstract_params), step
  state_dir = resolve_state_dir(path)
  target = {'params': abstract_params, 'step': jax.ShapeDtypeStruct((), 'int32')}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  with ocp.PyTreeCheckpointer() as checkpointer:
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
  logging.info('Initialized parameters from %s.', state_dir)
  return restored['params'], int(restored['step'])


def write_text_atomically(path: str, text: str) -> None:
  """Readers see the old file or the complete new one, never a partial write."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + '.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise

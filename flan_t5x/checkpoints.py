"""Orbax checkpoints: sharded, async, keep-N; restore order as T5X.

Layout: MODEL_DIR/checkpoint_<step>/{state, run, input}. `state` is the TrainState
(step, params, optimizer state) saved shard-by-shard by every process; `run` is JSON
with the run seed and the number of training batches consumed; `input` holds each
process's input-iterator position (`process_<i>-of-<n>/`), so a resumed run reads
the same data without replaying it. Orbax writes into a temporary directory, syncs
the processes and renames it when complete, so an interrupted save is never mistaken
for a checkpoint.

This module is the one reader of the project's own format (`read_params`); other
formats are imported by `checkpoint_import`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from flan_t5x import assignment_map
from flan_t5x import checkpoint_integrity
from flan_t5x import config_checks
from flan_t5x import file_modes

PyTree = Any
STEP_PREFIX = 'checkpoint'
TMP_DIR_SUFFIX = '.orbax-checkpoint-tmp'  # orbax's temporary directory: <final name> + this


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  period: int = 5000
  keep: int | None = None  # None keeps every checkpoint (T5X default).
  async_save: bool = True
  # T5X's name: save each host's input-iterator position with the checkpoint (constant-time
  # exact resume). Off: a resume replays the consumed batches.
  save_dataset: bool = True
  # Also keep the checkpoint with the best value of this metric (e.g. 'validation/loss', or an
  # 'inference_eval/<task>/<metric>' scalar), beside the `keep` latest ones. None: latest only.
  keep_best_metric: str | None = None
  keep_best_mode: str = 'min'  # 'min' or 'max'
  # T5X's: also save at these steps (beside every `period` steps and the last).
  checkpoint_steps: tuple[int, ...] | None = None
  # T5X's; flan_t5x keeps each input position inside its checkpoint, so only T5X's default.
  keep_dataset_checkpoints: int | None = None
  dtype: str = 'float32'  # T5X's; flan_t5x saves float32 parameters

  def __post_init__(self):
    config_checks.raise_refused(self)

  @staticmethod
  def refusal(field: str, value: Any) -> str | None:
    """Why flan_t5x refuses this T5X field value (None: honoured); checked when gin parses too."""
    if field == 'dtype' and value != 'float32':
      return (f"utils.SaveCheckpointConfig.dtype = {value!r}: flan_t5x saves float32 parameters only; remove "
              "the binding (convert afterwards: python -m flan_t5x.convert).")
    if field == 'keep_dataset_checkpoints' and value is not None:
      return (f'utils.SaveCheckpointConfig.keep_dataset_checkpoints = {value}: flan_t5x saves the input '
              'position inside each checkpoint, so it is kept and deleted with it; instead: '
              'utils.SaveCheckpointConfig.keep.')
    if field == 'checkpoint_steps' and value is not None and any(int(s) < 1 for s in value):
      return f'utils.SaveCheckpointConfig.checkpoint_steps = {value}: steps must be positive.'
    return None


RESTORE_MODES = ('latest', 'specific')


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """`path`: INITIAL_CHECKPOINT_PATH, used only when MODEL_DIR has no checkpoint.

  `fallback_to_previous`: if the newest checkpoint in MODEL_DIR is damaged, move it to
  MODEL_DIR/damaged/ and resume from the newest intact one. Off: the run stops and names it.

  T5X's fields, with T5X's meaning: `mode` 'specific' (path is a checkpoint) or 'latest' (a
  MODEL_DIR's newest; flan_t5x also takes a checkpoint there); `assignment_map`: (pattern,
  replacement or None) rules reading the model's parameters from other checkpoint names when
  training starts from `path` (see flan_t5x.assignment_map; not applied on resume, as in T5X);
  `fallback_to_scratch`: parameters the checkpoint does not give (after `assignment_map`) are
  initialized from scratch, and an INITIAL_CHECKPOINT_PATH holding no checkpoint starts the model
  from scratch instead of failing; `strict`, `restore_dataset`, `dtype`, `use_gda` at T5X's
  defaults only (other values are refused, naming the flan_t5x way).
  """
  path: str | None = None
  fallback_to_previous: bool = False
  mode: str = 'latest'
  assignment_map: Any = None
  fallback_to_scratch: bool = False
  strict: bool = True
  restore_dataset: bool = False
  dtype: str = 'float32'
  use_gda: bool = True

  def __post_init__(self):
    config_checks.raise_refused(self)

  @staticmethod
  def refusal(field: str, value: Any) -> str | None:
    """Why flan_t5x refuses this T5X field value (None: honoured); checked when gin parses too."""
    if field == 'mode' and value not in RESTORE_MODES:
      return (f"utils.RestoreCheckpointConfig.mode = {value!r}: flan_t5x restores one checkpoint "
              f"({' or '.join(map(repr, RESTORE_MODES))}); to evaluate several ('all'), run eval once per "
              "checkpoint_<step>.")
    if field == 'assignment_map' and value is not None:
      try:
        assignment_map.check_rules(value)
      except assignment_map.AssignmentMapError as err:
        return str(err)
    defaults = {'strict': (True, 'a checkpoint must hold every parameter of the model; to start new parameters '
                           'from scratch, convert the checkpoint first (python -m flan_t5x.convert)'),
                'restore_dataset': (False, 'a run resumed from MODEL_DIR always continues its input position; '
                                    'an INITIAL_CHECKPOINT_PATH starts the data afresh'),
                'dtype': ('float32', "flan_t5x restores float32 parameters (the model's dtype sets the "
                          'activations)'),
                'use_gda': (True, 'flan_t5x always restores jax.Arrays')}
    if field in defaults and value != defaults[field][0]:
      default, why = defaults[field]
      return (f"utils.RestoreCheckpointConfig.{field} = {value!r}: only T5X's default {default!r} is supported; "
              f'{why}.')
    return None


class CheckpointSaveError(RuntimeError):
  """A save failed (full disk, read-only or vanished MODEL_DIR); the previous checkpoints are untouched."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  save: SaveCheckpointConfig = dataclasses.field(default_factory=SaveCheckpointConfig)
  restore: RestoreCheckpointConfig = dataclasses.field(default_factory=RestoreCheckpointConfig)


@dataclasses.dataclass
class RunState:
  """Host-side facts that must survive a restart along with the TrainState."""
  seed: int
  batches_consumed: int = 0
  # The global BATCH_SIZE that consumed them (None: saved before it was recorded).
  batch_size: int | None = None
  # PEFT runs (flan_t5x.adapters): adapter configuration and the base checkpoint's fingerprint.
  peft: dict | None = None
  # TRAIN_STEPS_RELATIVE: the step it resolved to when the run first started (fixed across restarts).
  relative_total_steps: int | None = None


class _InputStateHandler(ocp.CheckpointHandler):
  """Every process writes its own input position: <item>/process_<i>-of-<n>/<file>."""

  def save(self, directory: epath.Path, args: 'InputStateSave') -> None:
    process_dir = directory / _process_dir_name()
    process_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in args.files.items():
      (process_dir / name).write_bytes(payload)

  def restore(self, directory: epath.Path, args: 'InputStateRestore | None' = None) -> dict[str, bytes] | None:
    del args
    process_dir = directory / _process_dir_name()
    if not process_dir.exists():
      return None
    return {path.name: path.read_bytes() for path in process_dir.iterdir()} or None

  def metadata(self, directory: epath.Path) -> None:
    return None

  def finalize(self, directory: epath.Path) -> None:
    pass

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(_InputStateHandler, for_save=True)
@dataclasses.dataclass
class InputStateSave(ocp.args.CheckpointArgs):
  files: dict[str, bytes]


@ocp.args.register_with_handler(_InputStateHandler, for_restore=True)
@dataclasses.dataclass
class InputStateRestore(ocp.args.CheckpointArgs):
  pass


def _process_dir_name() -> str:
  return f'process_{jax.process_index()}-of-{jax.process_count()}'


_ITEMS = ('state', 'run', 'input')


def _manager(directory: str, keep: int | None, async_save: bool, read_only: bool = False,
             best_metric: str | None = None, best_mode: str = 'min', before_commit=None):
  retention = dict(max_to_keep=keep)
  if best_metric:
    if best_mode not in ('min', 'max'):
      raise ValueError(f"SaveCheckpointConfig.keep_best_mode must be 'min' or 'max', got {best_mode!r}.")
    policy = ocp.checkpoint_managers
    retention = dict(preservation_policy=policy.AnyPreservationPolicy([
        policy.LatestN(keep),
        # Sorted ascending and the last n kept: reverse for 'min'.
        policy.BestN(get_metric_fn=lambda metrics: float(metrics[best_metric]), reverse=best_mode == 'min',
                     n=1, keep_checkpoints_without_metrics=False)]))
  # `before_commit` runs on the primary process once every process has written, before the
  # temporary directory is renamed (orbax's post_finalization_callback): files written there are
  # part of the atomic save.
  # Directories are created synchronously: created by orbax's thread, an unwritable MODEL_DIR
  # left the other processes' barrier waiting 300 s before the save failed with a TimeoutError.
  async_options = ocp.AsyncOptions(post_finalization_callback=before_commit,
                                   create_directories_asynchronously=False) if async_save else None
  options = ocp.CheckpointManagerOptions(
      step_prefix=STEP_PREFIX, create=not read_only, read_only=read_only, async_options=async_options,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only, **retention)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=_ITEMS)


@dataclasses.dataclass
class Restored:
  state: PyTree
  run_state: RunState
  input_state: dict[str, bytes] | None  # None: not saved, or saved by a different number of hosts


class Checkpointer:
  """Saves and restores TrainState + RunState (+ input position) under MODEL_DIR; every process calls it."""

  def __init__(self, model_dir: str, config: SaveCheckpointConfig, abstract_state: PyTree,
               optimizer_name: str = 'optimizer'):
    if config.period is not None and config.period <= 0:
      raise ValueError(f'Checkpoint period must be positive, got {config.period}.')
    self.model_dir = model_dir
    self.config = config
    self.abstract_state = abstract_state
    self.optimizer_name = optimizer_name  # named when a checkpoint's optimizer state is of another one
    self._manager = _manager(model_dir, config.keep, config.async_save,
                             best_metric=config.keep_best_metric, best_mode=config.keep_best_mode,
                             before_commit=self._write_manifest_before_commit)
    self._unchecksummed: list[int] = []  # saved by this process, manifest not yet checked
    self._save_failed = False
    self._saving_step: int | None = None
    self._commit_error: OSError | None = None  # why the running save's manifest could not be written
    # What a restore found: the checkpoint, and whether its files matched a checksum manifest.
    self.restored_step: int | None = None
    self.restored_verified = False

  def step_dir(self, step: int) -> str:
    return os.path.join(os.path.abspath(self.model_dir), f'{STEP_PREFIX}_{step}')

  def _write_manifest_before_commit(self) -> None:
    """Orbax's save thread, primary process: the manifest goes into the temporary directory, so the
    rename publishes checkpoint and checksums together (a kill never leaves one without the other)."""
    tmp_dir = self.step_dir(self._saving_step) + TMP_DIR_SUFFIX
    try:
      write_text_atomically(os.path.join(tmp_dir, checkpoint_integrity.MANIFEST),
                            checkpoint_integrity.manifest_text(tmp_dir))
    except OSError as err:  # orbax only logs it and commits nothing: kept to name the cause
      self._commit_error = err
      raise

  def _write_manifest(self, step: int, unverified: str = '') -> None:
    """Checksums of a complete save; `unverified`: written at a restore instead (the manifest says so)."""
    if jax.process_index() == 0 and not checkpoint_integrity.has_manifest(self.step_dir(step)):
      write_text_atomically(os.path.join(self.step_dir(step), checkpoint_integrity.MANIFEST),
                            checkpoint_integrity.manifest_text(self.step_dir(step), unverified or None))
      if unverified:
        logging.warning('%s had no checksum manifest: it is unverifiable; wrote one that says so (%s).',
                        self.step_dir(step), unverified)
        print(f'[flan_t5x] {self.step_dir(step)} had no checksum manifest: unverifiable. Orbax read it, its '
              'shapes matched and every tensor was finite; wrote a manifest that records it as unverified.',
              flush=True)

  def _finish_saves(self) -> None:
    """Waits for the running save; a failure becomes CheckpointSaveError. Then checksums what completed."""
    try:
      self._manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except  (any failure of the save thread)
      failed = self._unchecksummed[-1] if self._unchecksummed else None
      if failed is not None and checkpoint_integrity.is_intact(self.step_dir(failed)):
        self._warn_old_checkpoints_kept(failed, err)  # the save is complete: keep-N's deletion failed
      else:
        self._save_failed = True
        self._unchecksummed = [s for s in self._unchecksummed if s != failed]
        raise self._save_error(failed, err) from err
    # An async save can fail without wait_until_finished raising (orbax logs the failed write's
    # exception from its thread and commits nothing), so what was not committed to disk failed.
    lost = [s for s in self._unchecksummed if not os.path.isdir(self.step_dir(s))]
    if lost:
      self._save_failed = True
      self._unchecksummed = [s for s in self._unchecksummed if s not in lost]
      cause, self._commit_error = self._commit_error, None
      raise self._save_error(lost[0], cause or RuntimeError(
          'the save was not committed; the write error logged above says why (e.g. no space left on '
          'the device, or a file too large)'))
    complete = set(self._manager.all_steps())
    for step in self._unchecksummed:
      if step in complete:
        try:
          self._write_manifest(step)  # a synchronous save (the asynchronous one wrote it before its commit)
        except OSError as err:
          self._save_failed = True
          self._unchecksummed = []
          raise self._save_error(step, err) from err
    self._unchecksummed = []

  def _warn_old_checkpoints_kept(self, saved: int, err: BaseException) -> None:
    """keep-N could not delete an old checkpoint after `saved` was committed: its own warning, naming
    what is left (possibly in part); training goes on."""
    keep = self.config.keep
    steps = saved_steps(self.model_dir)
    old = [s for s in steps if keep and s < saved and s not in steps[-keep:]]
    names = ', '.join(self.step_dir(s) for s in old) or 'an old checkpoint'
    reason = str(err).split(' [tensorstore_spec=')[0][:300]
    message = (f'{self.step_dir(saved)} is saved and complete, but keep={keep} could not delete the old checkpoint '
               f'{names} ({type(err).__name__}: {reason}); it may be partly deleted: remove it by hand. '
               'Training goes on.')
    logging.warning(message)
    print(f'[flan_t5x] WARNING: {message}', flush=True)

  def poll(self) -> None:
    """Called after every step: a finished save's failure is raised now, not at the next save."""
    if self._unchecksummed and not self._manager.is_saving_in_progress():
      self._finish_saves()

  def _save_error(self, step: int | None, err: BaseException) -> CheckpointSaveError:
    intact = [s for s in self._manager.all_steps() if s != step]  # orbax's list: no directory read
    kept = (f'The last complete checkpoint, {self.step_dir(max(intact))}, is intact; a restart resumes from it.'
            if intact else 'No earlier checkpoint exists in MODEL_DIR.')
    what = f'{STEP_PREFIX}_{step}' if step is not None else 'a checkpoint'
    # Tensorstore appends its whole JSON spec to the OS error; the first part names the file and errno.
    reason = str(err).split(' [tensorstore_spec=')[0][:800]
    return CheckpointSaveError(
        f'Saving {what} to {self.model_dir} failed: {type(err).__name__}: {reason}. Training stopped. {kept} '
        'Free disk space (or make MODEL_DIR writable) and run the same command again.')

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: PyTree, run_state: RunState, input_state: dict[str, bytes] | None = None,
           metrics: dict[str, float] | None = None) -> None:
    """Starts an (async) save; `metrics` rank it for `keep_best_metric`."""
    step = int(jax.device_get(state.step))
    items = dict(state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(dataclasses.asdict(run_state)))
    if self.config.save_dataset:
      items['input'] = InputStateSave(dict(input_state or {}))
    self._finish_saves()
    self._saving_step = step
    try:
      self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
    except Exception as err:  # pylint: disable=broad-except  (a synchronous part of the save failed)
      self._save_failed = True
      raise self._save_error(step, err) from err
    self._unchecksummed.append(step)
    if not self.config.async_save:
      self._finish_saves()

  def wait(self) -> None:
    self._finish_saves()

  def restore_latest(self, fallback_to_previous: bool = False) -> Restored | None:
    """The newest checkpoint, verified first; a damaged one raises unless `fallback_to_previous`."""
    moved = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self._restore_step(step)
      except checkpoint_integrity.DamagedCheckpointError as err:
        if not fallback_to_previous:
          raise checkpoint_integrity.DamagedCheckpointError(
              err.path, err.reason, 'Training did not start. Restore the file, delete the directory, or set '
              'utils.RestoreCheckpointConfig.fallback_to_previous = True to move it to '
              'MODEL_DIR/damaged/ and resume from the previous checkpoint.') from None
        moved.append((err.path, self._quarantine(err)))
    if moved:  # never a fresh start in a MODEL_DIR whose every checkpoint was damaged
      listing = '; '.join(f'{source} -> {target}' for source, target in moved)
      raise checkpoint_integrity.NoIntactCheckpointError(
          f'fallback_to_previous found no intact checkpoint in {self.model_dir}: it moved every one aside '
          f'({listing}). Training did not start. Restore them from a copy, or start from scratch on purpose '
          'in a new MODEL_DIR.')
    return None

  def _quarantine(self, err: checkpoint_integrity.DamagedCheckpointError) -> str:
    """Moves the damaged checkpoint to MODEL_DIR/damaged/; returns where it went."""
    moved = os.path.join(self.model_dir, 'damaged', os.path.basename(err.path.rstrip('/')))
    if jax.process_index() == 0:
      moved = checkpoint_integrity.quarantine(self.model_dir, err.path)
      logging.warning('%s Moved to %s; trying the previous checkpoint.', err, moved)
      print(f'[flan_t5x] WARNING: {err} Moved to {moved} (fallback_to_previous); trying the previous '
            'checkpoint.', flush=True)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes('flan_t5x_quarantine')
    self._manager.reload()
    return moved

  def _restore_step(self, step: int) -> Restored:
    step_dir = self.step_dir(step)
    checkpoint_integrity.verify(step_dir)
    had_manifest = checkpoint_integrity.has_manifest(step_dir)
    verified = checkpoint_integrity.verified_at_save(step_dir)
    checkpoint_integrity.raise_if_other_model(step_dir, self.abstract_state.params, self.abstract_state.opt_state,
                                              self.optimizer_name)
    items = dict(state=ocp.args.StandardRestore(self.abstract_state), run=ocp.args.JsonRestore())
    if os.path.isdir(os.path.join(step_dir, 'input')):
      items['input'] = InputStateRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as err:  # pylint: disable=broad-except  (orbax/tensorstore read errors)
      raise checkpoint_integrity.DamagedCheckpointError(step_dir, f'orbax could not restore it '
                                                        f'({type(err).__name__}: {err})') from err
    logging.info('Restored step %d from %s.', step, self.model_dir)
    if not had_manifest:  # saved before manifests existed, or its manifest was lost
      checkpoint_integrity.raise_if_not_finite(step_dir, (restored['state'].params, restored['state'].opt_state))
      self._write_manifest(step, checkpoint_integrity.RESTORE_ORIGIN)
    self.restored_step, self.restored_verified = step, verified
    return Restored(restored['state'], RunState(**restored['run']), restored.get('input'))

  def close(self) -> None:
    """Finishes the running save; a failure already raised by `save` is logged, not raised twice."""
    already_failed = self._save_failed
    try:
      self._finish_saves()
      self._manager.close()
    except Exception as err:  # pylint: disable=broad-except
      if not already_failed:
        raise
      logging.warning('After a failed save, closing the checkpoint manager also failed: %s', err)


def saved_steps(model_dir: str) -> list[int]:
  """The steps of MODEL_DIR's checkpoint_<step> directories, ascending, by name alone (orbax renames a
  save into place when it is complete; its contents are not checked here)."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(m.group(1)) for m in (re.fullmatch(rf'{STEP_PREFIX}_(\d+)', name)
                                          for name in os.listdir(model_dir)) if m)


def _complete(step_dir: str) -> bool:
  """A finished save: its checksum manifest, or (saved before manifests) orbax's state metadata."""
  return checkpoint_integrity.has_manifest(step_dir) or os.path.isfile(os.path.join(step_dir, 'state', '_METADATA'))


def resolve_state_dir(path: str) -> str:
  """Accepts a model dir (uses its latest checkpoint), a checkpoint_<step> dir, or its `state` dir."""
  path = os.path.abspath(path)
  if os.path.basename(path) == 'state' and os.path.isdir(path):
    return path
  if os.path.isdir(os.path.join(path, 'state')):
    return os.path.join(path, 'state')
  if os.path.isdir(path):
    manager = _manager(path, keep=None, async_save=False, read_only=True)
    steps = sorted(manager.all_steps(), reverse=True)
    manager.close()
    # The newest complete one: a directory being written, or emptied, is passed over and named.
    complete = [s for s in steps if _complete(os.path.join(path, f'{STEP_PREFIX}_{s}'))]
    skipped = [s for s in steps if complete and s > complete[0]]
    if skipped:
      print(f'[flan_t5x] {path}: passing over {", ".join(f"{STEP_PREFIX}_{s}" for s in skipped)} (no complete '
            f'checkpoint in it); using {STEP_PREFIX}_{complete[0]}.', flush=True)
    if complete:
      return os.path.join(path, f'{STEP_PREFIX}_{complete[0]}', 'state')
    if steps:
      raise ValueError(f'{path} holds no complete checkpoint: {", ".join(f"{STEP_PREFIX}_{s}" for s in steps)} '
                       'lack their saved state (orbax metadata or checksum manifest).')
  raise ValueError(f'No checkpoint found at INITIAL_CHECKPOINT_PATH={path!r}; expected a MODEL_DIR with '
                   f'{STEP_PREFIX}_<step>/ subdirectories or one such directory.')


def read_params(path: str, abstract_params: PyTree = None, dtype: Any = np.float32) -> tuple[PyTree, int]:
  """(params, step) of a flan-t5x checkpoint; no optimizer state.

  With `abstract_params` (ShapeDtypeStructs with shardings) the parameters are restored
  directly into those shardings; without, as host numpy arrays of `dtype`.
  """
  state_dir = resolve_state_dir(path)
  step_dir = os.path.dirname(state_dir)
  checkpoint_integrity.verify(step_dir)
  if abstract_params is not None:
    checkpoint_integrity.raise_if_other_model(step_dir, abstract_params)
  try:
    restored = _restore_params(state_dir, abstract_params)
  except Exception as err:  # pylint: disable=broad-except  (orbax/tensorstore read errors)
    raise checkpoint_integrity.DamagedCheckpointError(
        step_dir, f'orbax could not read its parameters ({type(err).__name__}: {err})') from err
  params = restored['params']
  if abstract_params is None:
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), params)
  logging.info('Read parameters from %s.', state_dir)
  return params, int(restored['step'])


def _restore_params(state_dir: str, abstract_params: PyTree) -> dict:
  if abstract_params is None:
    from flan_t5x import t5x_format  # pylint: disable=g-import-not-at-top
    tree = t5x_format.orbax_tree(state_dir)
    target = {'params': tree['params'], 'step': tree['step']}
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  else:
    target = {'params': abstract_params, 'step': jax.ShapeDtypeStruct((), 'int32')}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  with ocp.PyTreeCheckpointer() as checkpointer:
    return checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))


def read_run_json(run_dir: str) -> dict:
  """The `run` item (RunState as JSON) of a checkpoint_<step> directory."""
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    return checkpointer.restore(os.path.abspath(run_dir), args=ocp.args.JsonRestore())


def write_run_json(run_dir: str, value: dict) -> None:
  """Writes a `run` item as the Checkpointer does (orbax renames it into place when complete)."""
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    checkpointer.save(os.path.abspath(run_dir), args=ocp.args.JsonSave(value))


def write_text_atomically(path: str, text: str) -> None:
  """Readers see the old file or the complete new one, never a partial write; mode as open() under the umask."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + '.tmp')
  try:
    os.fchmod(fd, file_modes.file_mode())  # mkstemp makes it 0600 whatever the umask
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise

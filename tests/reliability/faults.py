"""Shared by the reliability tests: a training run with every restore option, damage to a file."""

from __future__ import annotations

import os
import resource
import signal
import sys
import time

import jax

from flan_t5x import checkpoints
from flan_t5x import partitioning
from flan_t5x import schedules
from flan_t5x import training as train_lib
from flan_t5x import trainer as trainer_lib

import helpers
import soak_kill  # bench/soak_kill.py (the conftest puts bench/ on the path)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_PATHS = [REPO, os.path.join(REPO, 'tests', 'engine'), os.path.dirname(os.path.abspath(__file__)),
              os.path.join(REPO, 'bench')]  # faults imports soak_kill


def train(model_dir, total_steps, fallback_to_previous=False, model=None, skip_nonfinite_grads=False,
          trainer_cls=None, period=1, lr=0.01):
  """helpers.run_training's tiny setup, with the restore flag and the trainer's guard exposed."""
  lr_fn = schedules.create_learning_rate_scheduler(factors='constant', base_learning_rate=lr)
  make = trainer_cls or trainer_lib.Trainer
  return train_lib.train(
      model=model or helpers.tiny_model(), model_dir=str(model_dir),
      train_dataset_cfg=helpers.dataset_cfg(8),
      checkpoint_cfg=checkpoints.CheckpointConfig(
          save=checkpoints.SaveCheckpointConfig(period=period),
          restore=checkpoints.RestoreCheckpointConfig(fallback_to_previous=fallback_to_previous)),
      partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]),
      trainer_cls=lambda **kw: make(learning_rate_fn=lr_fn, skip_nonfinite_grads=skip_nonfinite_grads, **kw),
      total_steps=total_steps, eval_steps=None, eval_period=None, random_seed=0, use_progress_bar=False,
      log_period=1)


def child_env() -> dict:
  return dict(os.environ, PYTHONPATH=os.pathsep.join(TEST_PATHS + [os.environ.get('PYTHONPATH', '')]),
              XLA_FLAGS='--xla_backend_optimization_level=0')


def child_train_command(model_dir, total_steps, file_size_limit: int | None = None) -> list[str]:
  """The same run as `train(model_dir, total_steps)`, in a child Python process.

  `file_size_limit`: from the first training step on, no file may grow past this many bytes
  (RLIMIT_FSIZE: writes fail with EFBIG, as they fail with ENOSPC on a full disk). Set there, not
  at the start, because the restore itself writes the saved input position to a temporary file.
  """
  code = (f'import faults; faults.train({str(model_dir)!r}, {total_steps}, '
          f'trainer_cls=faults.disk_fills_trainer({file_size_limit}))')
  return [sys.executable, '-c', code]


def disk_fills_trainer(file_size_limit: int | None):
  """A Trainer class whose process gets RLIMIT_FSIZE=`file_size_limit` at its first step."""
  if file_size_limit is None:
    return trainer_lib.Trainer

  class DiskFillsTrainer(trainer_lib.Trainer):

    def train_step(self, state, local_batch):
      if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != file_size_limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
      return super().train_step(state, local_batch)
  return DiskFillsTrainer


largest_file = soak_kill.largest_file


def steps_in(model_dir) -> list[int]:
  """Complete checkpoint steps (orbax's temporary directories have a suffix after the number)."""
  prefix = checkpoints.STEP_PREFIX + '_'
  return sorted(int(name[len(prefix):]) for name in os.listdir(model_dir)
                if name.startswith(prefix) and name[len(prefix):].isdigit())


class DiesAfterSaveTrainer(trainer_lib.Trainer):
  """SIGKILLs its own process at step `DIES_AT`, as soon as the save of the step before is complete
  (its directory renamed into place): the moment a preemption used to leave a checksum-less checkpoint."""

  DIES_AT = 4
  calls = 0

  def train_step(self, state, local_batch):
    self.calls += 1
    if self.calls == self.DIES_AT:
      model_dir = self.dies_in
      while not os.path.isdir(os.path.join(model_dir, f'{checkpoints.STEP_PREFIX}_{self.DIES_AT - 1}')):
        time.sleep(0.001)
      os.kill(os.getpid(), signal.SIGKILL)
    return super().train_step(state, local_batch)


def child_dies_after_save_command(model_dir) -> list[str]:
  code = (f'import faults; faults.DiesAfterSaveTrainer.dies_in = {str(model_dir)!r}; '
          f'faults.train({str(model_dir)!r}, 8, trainer_cls=faults.DiesAfterSaveTrainer)')
  return [sys.executable, '-c', code]


def loses_write_permission_trainer(model_dir, at_step: int):
  """A Trainer class whose process can no longer write to `model_dir` from step `at_step` on: as root
  (which chmod does not stop) it drops its effective uid to nobody, which every thread shares."""

  class LosesWritePermission(trainer_lib.Trainer):
    calls = 0

    def train_step(self, state, local_batch):
      self.calls += 1
      if self.calls == at_step:
        if os.geteuid() == 0:
          os.seteuid(65534)
        else:
          os.chmod(model_dir, 0o555)
      return super().train_step(state, local_batch)
  return LosesWritePermission


def child_loses_permission_command(model_dir, total_steps: int, at_step: int) -> list[str]:
  code = (f'import faults; faults.train({str(model_dir)!r}, {total_steps}, '
          f'trainer_cls=faults.loses_write_permission_trainer({str(model_dir)!r}, {at_step}))')
  return [sys.executable, '-c', code]

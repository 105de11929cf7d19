r"""Training's command-line entry point (T5X-compatible flags); the loop is flan_t5x/training.py.

  python -m flan_t5x.train --gin_file=gin/demo.gin --gin.MODEL_DIR="'runs/x'"

Gin files import the SeqIO task module themselves (`import flan_tasks`), as T5X run files do.
"""

from __future__ import annotations

import os
import sys

import jax

from flan_t5x import checkpoints
from flan_t5x import preemption
from flan_t5x import training

# Gin files written for earlier versions name the loop `flan_t5x.train.train` (`from flan_t5x import train as
# train_script`); T5X-form files `__main__.train` (flan_t5x/t5x_names/train_script.py): one function.
train = training.train


def main(argv: list[str]) -> None:
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils  # pylint: disable=g-import-not-at-top
  model_dir = gin_utils.start_run('%MODEL_DIR', write_config=False, job='train')
  config_text = gin.config_str()
  wrote_config = []

  def write_config() -> None:  # once the run is accepted: a refused run must not overwrite it
    if jax.process_index() == 0:
      checkpoints.write_text_atomically(os.path.join(os.path.abspath(model_dir), 'config.gin'), config_text)
    wrote_config.append(True)
  try:
    train_with_gin(on_start=write_config)
  except preemption.Preempted as stop:
    print(f'[flan_t5x] {stop.line}', flush=True)  # (gin appends its call site to the message)
    sys.exit(preemption.EXIT_CODE)
  except checkpoints.CheckpointSaveError as error:
    # The error names the failed save and the intact checkpoint. Leave at once: the save's own threads
    # (orbax, asyncio) would otherwise print dozens of lines while the interpreter shuts down, below it.
    print(f'error: CheckpointSaveError: {gin_utils.without_call_site(error)}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the failed save's threads may still be logging: not below it
    os._exit(1)  # pylint: disable=protected-access  (atomic files; the kernel drops the run lock)
  if wrote_config and jax.process_index() == 0:  # not after a no-op on a finished MODEL_DIR
    checkpoints.write_text_atomically(os.path.join(os.path.abspath(model_dir), 'operative_config.gin'),
                                      gin.operative_config_str())


def train_with_gin(**kwargs):
  import gin  # pylint: disable=g-import-not-at-top
  return gin.get_configurable(train)(**kwargs)


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

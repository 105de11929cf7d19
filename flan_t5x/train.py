r"""Training loop and command-line entry point (T5X-compatible flags).

  python -m flan_t5x.train --gin_file=gin/demo.gin --gin.MODEL_DIR="'runs/x'"

Gin files import the SeqIO task module themselves (`import flan_tasks`), as
T5X run files do; `train()` itself is plain Python.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from flan_t5x import checkpoints
from flan_t5x import data
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import trainer as trainer_lib


class _SummaryWriter:
  """TensorBoard scalars under MODEL_DIR/<name>; only process 0 writes.

  Uses core `tf.summary.write` with the scalars-plugin metadata, so event files
  are TensorBoard-readable without the tensorboard package installed.
  """

  def __init__(self, log_dir: str):
    self.log_dir = log_dir
    self._writer = None
    if jax.process_index() == 0:
      import tensorflow as tf  # seqio already depends on TF; imported lazily to keep imports light.
      from tensorflow.core.framework import summary_pb2
      self._tf = tf
      self._metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'),
          data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()
      self._writer = tf.summary.create_file_writer(log_dir)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in scalars.items():
        self._tf.summary.write(name, self._tf.constant(value, self._tf.float32), step=step,
                               metadata=self._metadata)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc='train', unit='step', dynamic_ncols=True)


def _restore_or_init(trainer: trainer_lib.Trainer, checkpointer: checkpoints.Checkpointer,
                     initial_checkpoint_path: str | None, seed: int | None):
  """T5X order: latest in MODEL_DIR, else INITIAL_CHECKPOINT_PATH (params only), else fresh."""
  restored = checkpointer.restore_latest()
  if restored is not None:
    state, run_state = restored
    return state, run_state, f'resumed from {checkpointer.model_dir} at step {int(state.step)}'
  run_state = checkpoints.RunState(seed=seed if seed is not None else random.SystemRandom().randrange(2**31))
  trainer.seed = run_state.seed
  if initial_checkpoint_path:
    params, step = checkpoints.restore_params(initial_checkpoint_path, trainer.abstract_state.params,
                                              trainer.model.config)
    return trainer.state_from_params(params, step), run_state, f'initialized from {initial_checkpoint_path}'
  return trainer.init_state(), run_state, 'initialized from scratch'


class _InferenceEval:
  """Decodes the inference-eval mixture with the training params and logs its metrics."""

  def __init__(self, model, partitioner, cfg, model_dir: str):
    from flan_t5x import eval as eval_lib  # pylint: disable=g-import-not-at-top  (imports this module)
    from flan_t5x import inference  # pylint: disable=g-import-not-at-top
    self._eval_lib, self.cfg = eval_lib, cfg
    self._model, self._partitioner = model, partitioner
    self._runner = inference.InferenceRunner(model, partitioner, cfg.decoding_config)
    self._writer = _SummaryWriter(os.path.join(model_dir, 'inference_eval'))

  def run(self, step: int, params) -> dict[str, dict]:
    results, _ = self._eval_lib.evaluate_params(self._model, self._partitioner, params, self.cfg, self._runner)
    self._writer.write(step, self._eval_lib.scalars(results))
    return results

  def close(self) -> None:
    self._writer.close()


def _evaluate(trainer, params, eval_cfg, converter, seed, eval_steps) -> dict[str, float] | None:
  sums = None
  dataset = data.get_dataset(eval_cfg, converter, seed=seed, num_epochs=1)
  for index, batch in enumerate(data.numpy_batches(dataset)):
    if eval_steps is not None and index >= eval_steps:
      break
    metrics = jax.device_get(trainer.eval_step(params, batch))
    sums = metrics if sums is None else {k: sums[k] + metrics[k] for k in sums}
  return None if sums is None else models.summarize_metrics(sums)


def train(*, model: models.EncoderDecoderModel, model_dir: str,
          train_dataset_cfg: data.DatasetConfig,
          train_eval_dataset_cfg: data.DatasetConfig | None = None,
          checkpoint_cfg: checkpoints.CheckpointConfig | None = None,
          partitioner: partitioning.PjitPartitioner | None = None,
          trainer_cls: Callable[..., trainer_lib.Trainer] = trainer_lib.Trainer,
          total_steps: int, eval_steps: int | None = 20, eval_period: int | None = 1000,
          random_seed: int | None = None, log_period: int = 10, use_progress_bar: bool = True,
          stop_at_loss: float | None = None,
          inference_eval_cfg: Any = None) -> tuple[int, list[dict[str, Any]]]:
  """Trains until `total_steps`, resuming from MODEL_DIR if it holds a checkpoint.

  `inference_eval_cfg` (a `flan_t5x.eval.InferenceEvalConfig`, off by default)
  decodes its mixture every `eval_period` steps and logs the task metrics
  (ROUGE, accuracy) to MODEL_DIR/inference_eval.

  Returns (final step, per-step metric history of this invocation).
  Raises FloatingPointError on a non-finite loss without saving that state.
  """
  checkpoint_cfg = checkpoint_cfg or checkpoints.CheckpointConfig()
  partitioner = partitioner or partitioning.PjitPartitioner()
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  os.makedirs(model_dir, exist_ok=True)

  trainer = trainer_cls(model=model, partitioner=partitioner, batch_size=train_dataset_cfg.batch_size,
                        task_feature_lengths=train_dataset_cfg.task_feature_lengths,
                        seed=random_seed if random_seed is not None else 0)
  checkpointer = checkpoints.Checkpointer(model_dir, checkpoint_cfg.save, trainer.abstract_state)
  state, run_state, origin = _restore_or_init(trainer, checkpointer, checkpoint_cfg.restore.path, random_seed)
  trainer.seed = run_state.seed
  start_step = int(state.step)
  logging.info('Model %s; %s (seed %d).', model_dir, origin, run_state.seed)
  print(f'[flan_t5x] MODEL_DIR={model_dir}: {origin}; training to step {total_steps}.', flush=True)

  converter = model.feature_converter(pack=train_dataset_cfg.pack)
  train_batches = data.numpy_batches(data.get_dataset(
      train_dataset_cfg, converter, seed=run_state.seed, num_epochs=None,
      skip_batches=run_state.batches_consumed))
  do_eval = (train_eval_dataset_cfg is not None and eval_period and data.has_split(train_eval_dataset_cfg))
  if train_eval_dataset_cfg is not None and not do_eval:
    logging.warning('No validation split %r: skipping evaluation.', train_eval_dataset_cfg.split)
  eval_converter = model.feature_converter(pack=train_eval_dataset_cfg.pack) if do_eval else None

  train_writer = _SummaryWriter(os.path.join(model_dir, 'train'))
  eval_writer = _SummaryWriter(os.path.join(model_dir, 'validation')) if do_eval else None
  inference_eval = _InferenceEval(model, partitioner, inference_eval_cfg, model_dir) if (
      inference_eval_cfg is not None and eval_period) else None
  progress = _progress(total_steps, start_step, use_progress_bar and jax.process_index() == 0)
  history: list[dict[str, Any]] = []
  last_saved = start_step if checkpointer.latest_step() == start_step else None
  step = start_step
  try:
    while step < total_steps:
      batch = next(train_batches)
      tick = time.perf_counter()
      state, metrics = trainer.train_step(state, batch)
      summary = models.summarize_metrics(jax.device_get(metrics))
      summary['learning_rate'] = float(metrics['learning_rate'])
      step += 1
      if not (np.isfinite(summary['loss']) and bool(metrics['params_finite'])):
        checkpointer.wait()
        what = f'loss {summary["loss"]}' if not np.isfinite(summary['loss']) else 'parameters after the update'
        raise FloatingPointError(
            f'Non-finite {what} at step {step}; stopping without saving it. The last good checkpoint '
            f'(step {checkpointer.latest_step()}) in {model_dir} is kept.')
      run_state.batches_consumed += 1
      summary['step'] = step
      summary['steps_per_sec'] = 1.0 / max(time.perf_counter() - tick, 1e-9)
      history.append(summary)
      if progress is not None:
        progress.update(1)
        progress.set_postfix(loss=f'{summary["cross_ent_loss_per_token"]:.4f}', acc=f'{summary["accuracy"]:.3f}')
      if step % log_period == 0 or step == total_steps:
        logging.info('step %d: %s', step, {k: round(v, 5) for k, v in summary.items()})
        if progress is None and jax.process_index() == 0:
          print(f'[flan_t5x] step {step} loss/token {summary["cross_ent_loss_per_token"]:.4f} '
                f'accuracy {summary["accuracy"]:.3f}', flush=True)
        train_writer.write(step, {k: v for k, v in summary.items() if k != 'step'})
      if step % checkpoint_cfg.save.period == 0 or step == total_steps:
        checkpointer.save(state, run_state)
        last_saved = step
      if do_eval and step % eval_period == 0:
        eval_summary = _evaluate(trainer, state.params, train_eval_dataset_cfg, eval_converter, run_state.seed, eval_steps)
        if eval_summary:
          logging.info('validation at step %d: %s', step, eval_summary)
          print(f'[flan_t5x] step {step} validation loss/token '
                f'{eval_summary["cross_ent_loss_per_token"]:.4f} accuracy {eval_summary["accuracy"]:.3f}',
                flush=True)
          eval_writer.write(step, eval_summary)
      if inference_eval is not None and step % eval_period == 0:
        inference_eval.run(step, state.params)
      if stop_at_loss is not None and summary['cross_ent_loss_per_token'] <= stop_at_loss:
        break
    if last_saved != step:
      checkpointer.save(state, run_state)
  finally:
    if progress is not None:
      progress.close()
    checkpointer.close()
    train_writer.close()
    if eval_writer is not None:
      eval_writer.close()
    if inference_eval is not None:
      inference_eval.close()
  print(f'[flan_t5x] done at step {step}. Checkpoints: {model_dir}/{checkpoints.STEP_PREFIX}_<step>; '
        f'TensorBoard: tensorboard --logdir {model_dir}', flush=True)
  return step, history


def main(argv: list[str]) -> None:
  del argv
  import gin
  from flan_t5x import gin_utils
  model_dir = gin_utils.start_run('%MODEL_DIR')
  # Gin binds `train` in the importable module (gin files say
  # `from flan_t5x import train as train_script`), not in __main__.
  from flan_t5x import train as train_module
  train_module.train_with_gin()
  if jax.process_index() == 0:
    checkpoints.write_text_atomically(os.path.join(os.path.abspath(model_dir), 'operative_config.gin'),
                                      gin.operative_config_str())


def train_with_gin():
  import gin
  return gin.get_configurable(train)()


if __name__ == '__main__':
  from flan_t5x import gin_utils as _gin_utils
  _gin_utils.run(main)

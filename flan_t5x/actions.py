"""Periodic work of the training loop as a list of actions, each with its own period.

The loop calls `maybe_run(loop)` on every action after every step, in list order; an
action runs when its period divides the step (and, if `at_end`, on the final step). The
order matters where one action reads what another wrote: validation before early stopping
and before the checkpoint that records its metric.

Actions never force the host to wait on the accelerator except where they must read a
value (logging, validation, the finiteness check before a save).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from absl import logging

from flan_t5x import models
from flan_t5x import progress as progress_lib

PyTree = Any


class StopTraining(Exception):
  """Raised by an action to end training early and cleanly (the loop saves and returns)."""


@dataclasses.dataclass
class Loop:
  """What actions see and may update; owned by `train.train`."""
  step: int
  total_steps: int
  state: PyTree  # TrainState
  run_state: Any  # checkpoints.RunState
  trainer: Any
  checkpointer: Any
  inputs: Any  # data.InputIterator
  metrics: 'MetricsAccumulator'
  history: Any  # bounded deque of logged summaries
  eval_metrics: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)
  last_saved_step: int | None = None

  @property
  def is_last_step(self) -> bool:
    return self.step >= self.total_steps


class Action:
  """Base: subclasses set `period` (None: never periodic) and implement `run`."""
  period: int | None = None
  at_end: bool = False

  def due(self, loop: Loop) -> bool:
    periodic = bool(self.period) and loop.step % self.period == 0
    return periodic or (self.at_end and loop.is_last_step)

  def maybe_run(self, loop: Loop) -> None:
    if self.due(loop):
      self.run(loop)

  def run(self, loop: Loop) -> None:
    raise NotImplementedError

  def close(self) -> None:
    pass


# ------------------------------------------------------------------ metrics on the device


def _add(acc: dict, metrics: dict) -> dict:
  out = {k: acc[k] + jnp.asarray(metrics[k], jnp.float32) for k in MetricsAccumulator.SUMMED}
  out['finite'] = jnp.logical_and(acc['finite'], metrics['finite'])
  out['steps'] = acc['steps'] + 1
  # Steps the trainer's non-finite-gradient guard skipped (absent: no guard in that step function).
  out['skipped_steps'] = acc['skipped_steps'] + jnp.asarray(metrics.get('skipped_steps', 0.0), jnp.float32)
  out['learning_rate'] = jnp.asarray(metrics['learning_rate'], jnp.float32)  # the latest, not a sum
  return out


class MetricsAccumulator:
  """Sums step metrics on the device (no host wait); `take()` hands them over and starts afresh."""

  SUMMED = ('loss', 'z_loss', 'cross_ent_sum', 'correct_tokens', 'num_tokens')

  def __init__(self):
    self._add = jax.jit(_add, donate_argnums=(0,))
    self._acc = None

  def _zeros(self) -> dict:
    acc = {k: jnp.zeros((), jnp.float32) for k in self.SUMMED + ('learning_rate', 'skipped_steps')}
    return dict(acc, finite=jnp.ones((), bool), steps=jnp.zeros((), jnp.int32))

  def add(self, step_metrics: dict) -> None:
    self._acc = self._add(self._acc if self._acc is not None else self._zeros(), step_metrics)

  def take(self) -> dict | None:
    acc, self._acc = self._acc, None
    return acc

  def finite(self) -> bool:
    """Whether every step since the last `take` had a finite loss and parameters (waits for them)."""
    return self._acc is None or bool(jax.device_get(self._acc['finite']))


def per_batch_summary(sums_host: dict, num_batches: int) -> dict[str, float]:
  """Metric sums over `num_batches` batches -> loss, z_loss and num_tokens per batch (as one step
  reports them), per-token cross entropy and accuracy: train and validation scalars compare directly."""
  batches = max(int(num_batches), 1)
  summary = models.summarize_metrics(sums_host)
  for name in ('loss', 'z_loss', 'num_tokens'):
    summary[name] = float(sums_host[name]) / batches
  return summary


def summarize(acc_host: dict) -> dict[str, float]:
  """Host values of an accumulator -> the logged scalars (per-step means, per-token loss, accuracy)."""
  summary = per_batch_summary(acc_host, acc_host['steps'])
  summary['learning_rate'] = float(acc_host['learning_rate'])
  summary['skipped_steps'] = float(acc_host['skipped_steps'])
  return summary


def non_finite_error(step: int, loop: Loop) -> FloatingPointError:
  """Names where the run started and which checkpoint is kept; only one saved by this run after a
  finiteness check, or restored with matching checksums, is called good."""
  checkpointer = loop.checkpointer
  latest = checkpointer.latest_step()
  restored = getattr(checkpointer, 'restored_step', None)
  where = f'{checkpointer.model_dir}/checkpoint_{{}}'
  resumed = ''
  if restored is not None:
    checked = ('its files matched their checksums' if checkpointer.restored_verified else
               'it had no checksum manifest from its save, so damage from before the restore cannot be ruled out')
    resumed = f' This run resumed from {where.format(restored)} ({checked}).'
  if latest is None:
    kept = ' No checkpoint was saved.'
  elif (latest == restored and checkpointer.restored_verified) or (
      latest != restored and loop.last_saved_step == latest):  # saved by this run, after a finiteness check
    kept = f' The last good checkpoint (step {latest}) in {checkpointer.model_dir} is kept.'
  else:
    kept = (f' The newest checkpoint, {where.format(latest)}, is kept, but it was not verified: if a restart '
            'fails at the same step again, suspect it.')
  return FloatingPointError(
      f'Non-finite loss or parameters at or before step {step}; stopping without saving that state.'
      f'{resumed}{kept}')


# ------------------------------------------------------------------------------ actions


class LogMetrics(Action):
  """Every `period` steps: the metrics summed since the last log, to TensorBoard, the log and the bar.

  The values are read one step late (after the next step is dispatched) so the accelerator
  never idles while the host waits; `flush` reads them at once (before a save, at the end).
  """
  at_end = True

  def __init__(self, period: int, writer, progress=None, print_lines: bool = False):
    self.period = period
    self._writer = writer
    self._progress = progress
    self._print = print_lines
    self._pending: tuple[int, dict, float] | None = None
    self._last_time = time.perf_counter()
    self._last_step: int | None = None

  def run(self, loop: Loop) -> None:
    self.flush(loop)
    acc = loop.metrics.take()
    if acc is not None:
      self._pending = (loop.step, acc, time.perf_counter())
    if loop.is_last_step:
      self.flush(loop)

  def after_dispatch(self, loop: Loop) -> None:
    """Called by the loop right after dispatching the next step."""
    if self._pending is not None and not self.due(loop):
      self.flush(loop)

  def flush(self, loop: Loop) -> None:
    if self._pending is None:
      return
    step, acc, when = self._pending
    self._pending = None
    acc_host = jax.device_get(acc)
    if not bool(acc_host['finite']):
      raise non_finite_error(step, loop)
    summary = summarize(acc_host)
    since = self._last_step if self._last_step is not None else step - int(acc_host['steps'])
    summary['steps_per_sec'] = (step - since) / max(when - self._last_time, 1e-9)
    self._last_time, self._last_step = when, step
    loop.history.append(dict(summary, step=step))
    logging.info('step %d: %s', step, {k: round(v, 5) for k, v in summary.items()})
    if summary['skipped_steps'] and jax.process_index() == 0:
      progress_lib.say(f'[flan_t5x] step {step}: skipped {int(summary["skipped_steps"])} step(s) with a non-finite '
                   'gradient norm since the last log (Trainer.skip_nonfinite_grads)')
    if self._print and jax.process_index() == 0:
      progress_lib.say(f'[flan_t5x] step {step} loss/token {summary["cross_ent_loss_per_token"]:.4f} '
                   f'accuracy {summary["accuracy"]:.3f}')
    if self._progress is not None:
      self._progress.set_postfix(loss=f'{summary["cross_ent_loss_per_token"]:.4f}',
                                 acc=f'{summary["accuracy"]:.3f}')
    self._writer.write(step, summary)

  def close(self) -> None:
    self._writer.close()


class SaveCheckpoint(Action):
  """Every `period` steps and at the end: check finiteness, then save state, run state and input position."""
  at_end = True

  def __init__(self, period: int, logger: LogMetrics, extra_steps: Sequence[int] | None = None):
    self.period = period
    self._logger = logger
    self._extra_steps = frozenset(int(s) for s in extra_steps or ())  # T5X's checkpoint_steps

  def due(self, loop: Loop) -> bool:
    return super().due(loop) or loop.step in self._extra_steps

  def run(self, loop: Loop) -> None:
    if loop.last_saved_step == loop.step:
      return
    self._logger.flush(loop)
    if not loop.metrics.finite():
      raise non_finite_error(loop.step, loop)
    input_state = loop.inputs.state() if loop.checkpointer.config.save_dataset else None
    loop.checkpointer.save(loop.state, loop.run_state, input_state, metrics=loop.eval_metrics.get(loop.step))
    loop.last_saved_step = loop.step


class ValidationLoss(Action):
  """Every `period` steps: loss and accuracy on `eval_steps` batches of the validation split.

  Logged as train's scalars are: loss, z_loss and num_tokens averaged over the batches (so neither
  they nor early stopping's min_delta scale with EVAL_STEPS), cross entropy and accuracy per token.
  """

  def __init__(self, period: int, batches_fn: Callable[[], Any], eval_steps: int | None, writer,
               terminate_on_nan: Sequence['TerminateOnNanAction'] = ()):
    self.period = period
    self._batches_fn = batches_fn
    self._eval_steps = eval_steps
    self._writer = writer
    self._terminate_on_nan = terminate_on_nan

  def run(self, loop: Loop) -> None:
    sums, num_batches = None, 0
    for index, batch in enumerate(self._batches_fn()):
      if self._eval_steps is not None and index >= self._eval_steps:
        break
      metrics = jax.device_get(loop.trainer.eval_step(loop.state.params, batch))
      sums = metrics if sums is None else {k: sums[k] + metrics[k] for k in sums}
      num_batches += 1
    if sums is None:
      return
    summary = per_batch_summary(sums, num_batches)
    loop.eval_metrics = {loop.step: {f'validation/{k}': v for k, v in summary.items()}}
    logging.info('validation at step %d: %s', loop.step, summary)
    if jax.process_index() == 0:
      progress_lib.say(f'[flan_t5x] step {loop.step} validation loss/token {summary["cross_ent_loss_per_token"]:.4f} '
                   f'accuracy {summary["accuracy"]:.3f}')
    self._writer.write(loop.step, summary)
    for action in self._terminate_on_nan:
      action.check(summary, loop)

  def close(self) -> None:
    self._writer.close()


@dataclasses.dataclass(frozen=True)
class TerminateOnNanAction:
  """T5X's trainer.TerminateOnNanAction in train's `actions={'TRAIN_EVAL': [...]}`: stop when the
  validation `metric` ('loss', 'z_loss', 'cross_ent_loss_per_token' or 'accuracy') is NaN or Inf,
  without saving that state. flan_t5x evaluates the mixture as one set, so the check covers the
  whole validation mixture, `task`'s examples among them."""
  task: str
  metric: str = 'loss'

  def check(self, summary: dict[str, float], loop: Loop) -> None:
    if self.metric not in summary:
      raise ValueError(f'TerminateOnNanAction(metric={self.metric!r}): the validation metrics are '
                       f'{sorted(summary)}.')
    if not math.isfinite(summary[self.metric]):
      error = non_finite_error(loop.step, loop)
      raise FloatingPointError(f'TerminateOnNanAction({self.task!r}): validation {self.metric} is '
                               f'{summary[self.metric]} at step {loop.step}. {error}')


class GarbageCollect(Action):
  """T5X's gc_period: Python's garbage collector every `period` steps."""

  def __init__(self, period: int):
    self.period = period

  def run(self, loop: Loop) -> None:
    del loop
    gc.collect()


class InferenceEvaluation(Action):
  """Every `period` steps: decode a mixture with the current parameters and log its task metrics."""

  def __init__(self, period: int, evaluate_fn: Callable[[PyTree, int], dict[str, float]], writer):
    self.period = period
    self._evaluate_fn = evaluate_fn
    self._writer = writer

  def run(self, loop: Loop) -> None:
    scalars = self._evaluate_fn(loop.state.params, loop.step)
    if loop.step not in loop.eval_metrics:  # only this step's metrics are kept (bounded)
      loop.eval_metrics = {loop.step: {}}
    loop.eval_metrics[loop.step].update({f'inference_eval/{k}': v for k, v in scalars.items()})
    self._writer.write(loop.step, scalars)

  def close(self) -> None:
    self._writer.close()


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
  """Stop when `metric` (a validation or inference_eval scalar, e.g. 'validation/loss') has not
  improved by `min_delta` for `patience` evaluations; `mode` 'min' or 'max'."""
  metric: str
  mode: str = 'min'
  patience: int = 5
  min_delta: float = 0.0

  def __post_init__(self):
    if self.mode not in ('min', 'max'):
      raise ValueError(f"EarlyStoppingConfig.mode must be 'min' or 'max', got {self.mode!r}.")
    if self.patience < 1:
      raise ValueError(f'EarlyStoppingConfig.patience must be at least 1, got {self.patience}.')


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
  if best is None:
    return True
  return value < best - min_delta if mode == 'min' else value > best + min_delta


class EarlyStopping(Action):
  """Reads the metric the evaluation actions wrote at this step; stops after `patience` without gain."""

  def __init__(self, period: int, config: EarlyStoppingConfig):
    self.period = period
    self.config = config
    self.best: float | None = None
    self.best_step: int | None = None
    self._bad = 0

  def run(self, loop: Loop) -> None:
    metrics = loop.eval_metrics.get(loop.step, {})
    if self.config.metric not in metrics:
      raise ValueError(f'Early stopping metric {self.config.metric!r} was not computed at step {loop.step}; '
                       f'computed: {sorted(metrics)}. Check EVAL_PERIOD and the metric name.')
    value = metrics[self.config.metric]
    if math.isfinite(value) and improved(value, self.best, self.config.mode, self.config.min_delta):
      self.best, self.best_step, self._bad = value, loop.step, 0
      return
    self._bad += 1
    if self._bad >= self.config.patience:
      raise StopTraining(f'{self.config.metric} has not improved for {self._bad} evaluations '
                         f'(best {self.best:.5g} at step {self.best_step}).')

"""SIGTERM / SIGINT: finish the current step, save a complete checkpoint on every host, exit.

A preempted Cloud TPU or spot VM gets SIGTERM some seconds before it is stopped. Without
handling, everything since the last periodic save is lost (up to `period` steps). While
`train()` runs:

- one process: the first SIGTERM or SIGINT sets a flag; the loop sees it after the step in
  flight, saves that step (state, input position, manifest) and raises `Preempted`;
- several processes: every host must save the same step. JAX's preemption sync manager (started
  by jax.distributed) catches SIGTERM on any host and agrees on a step with all of them;
  `reached_preemption_sync_point(step)` is asked after every step, as T5X does on Cloud TPU.
  SIGINT is turned into a SIGTERM of the same process, so it takes the same path;
- a second signal exits at once (the default action of that signal).

The command-line job turns `Preempted` into EXIT_CODE after the save has finished; running the
same command again resumes from the saved step with the losses of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import threading

# sysexits.h EX_TEMPFAIL: "a temporary failure, the user is invited to retry" (the checkpoint is saved).
EXIT_CODE = 75
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped on SIGTERM / SIGINT after saving `step`; the same command resumes from it."""

  def __init__(self, step: int, signal_name: str, model_dir: str):
    self.line = (f'{signal_name} received: saved checkpoint_{step} in {model_dir} and stopped; run the same '
                 f'command again to resume from step {step} (exit code {EXIT_CODE}).')
    super().__init__(self.line)
    self.step, self.signal_name = step, signal_name


def _write_line(text: str) -> None:
  os.write(2, f'[flan_t5x] {text}\n'.encode())  # not print(): a handler may interrupt a print


def _exit_now(signum: int) -> None:
  _write_line(f'second {signal.Signals(signum).name}: exiting at once, without saving')
  signal.signal(signum, signal.SIG_DFL)
  os.kill(os.getpid(), signum)


def exit_on_signal_outside_training() -> None:
  """A training job's first line (flan_t5x/__init__.py): until train() installs its Watcher (and again
  after it uninstalls it), SIGTERM / SIGINT end the job at once with EXIT_CODE: nothing is being
  trained, so there is nothing to save, and the same command starts (or resumes) it again."""
  if threading.current_thread() is threading.main_thread():
    for signum in _SIGNALS:
      signal.signal(signum, _exit_outside_training)


def _exit_outside_training(signum, frame) -> None:
  del frame
  _write_line(f'{signal.Signals(signum).name} received outside the training loop (starting or finishing): '
              f'nothing to save; exiting with code {EXIT_CODE}. Run the same command again to go on.')
  os._exit(EXIT_CODE)  # pylint: disable=protected-access  (no cleanup to wait for: atomic writes, a kernel lock)


class Watcher:
  """Installed by `train()` for its duration (main thread only); `stop_at(step)` after every step.

  While installed, SIGINT no longer raises KeyboardInterrupt in the loop: it asks for a save.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._previous: dict[int, object] = {}
    self._multihost = False

  def install(self) -> 'Watcher':
    import jax  # pylint: disable=g-import-not-at-top
    self._multihost = jax.process_count() > 1
    if threading.current_thread() is not threading.main_thread():
      return self  # signals are delivered to the main thread only; a caller there handles them
    for signum in _SIGNALS:
      if self._multihost and signum == signal.SIGTERM:
        continue  # JAX's preemption notifier owns SIGTERM (its handler tells every host)
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def uninstall(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signal_name is not None:
      _exit_now(signum)
    self.signal_name = signal.Signals(signum).name
    _write_line(f'{self.signal_name} received: finishing the current step, then saving a checkpoint and '
                'exiting (send it again to exit at once, without saving)')
    if self._multihost:  # SIGINT: through JAX's notifier, so that every host stops at the same step
      os.kill(os.getpid(), signal.SIGTERM)

  def stop_at(self, step: int) -> bool:
    """True when this step is the one to save and stop at (the same step on every host)."""
    if not self._multihost:
      return self.signal_name is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if not multihost_utils.reached_preemption_sync_point(step):
      return False
    self.signal_name = self.signal_name or 'SIGTERM'
    if threading.current_thread() is threading.main_thread():  # from now on, a second signal exits
      self._previous.setdefault(signal.SIGTERM, signal.signal(signal.SIGTERM, lambda s, f: _exit_now(s)))
    return True

"""Progress of long work: a tqdm bar on a terminal, plain lines elsewhere (log files, SLURM output),
where a bar's carriage returns would make one giant line."""

from __future__ import annotations

import sys
import time


def on_terminal() -> bool:
  """Whether a bar would be seen as one (tqdm draws on stderr)."""
  return sys.stderr.isatty()


def say(message: str) -> None:
  """Prints a line of stdout without gluing it onto an open bar (tqdm clears and redraws it)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  tqdm.write(message, file=sys.stdout)
  sys.stdout.flush()


class Progress:
  """`total` units of work: a tqdm bar on a terminal; otherwise, with `lines`, a plain line at most
  every `line_seconds` (without, nothing: the caller logs its own lines)."""

  def __init__(self, total: int, desc: str, unit: str, initial: int = 0, lines: bool = True,
               line_seconds: float = 30.0, terminal: bool | None = None):
    self.total, self.desc, self.unit, self.done = total, desc, unit, initial
    self._lines = lines
    self._line_seconds = line_seconds
    self._last_line = time.monotonic()
    self._first: tuple[float, int] | None = None  # (time, units done) after the first update
    self._bar = None
    if on_terminal() if terminal is None else terminal:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

  @property
  def is_bar(self) -> bool:
    return self._bar is not None

  def update(self, count: int = 1) -> None:
    self.done += count
    if self._bar is not None:
      self._bar.update(count)
      return
    now = time.monotonic()
    if self._first is None:  # the first unit pays for compilation: the estimate starts after it
      self._first = (now, self.done)
      return
    if self._lines and now - self._last_line >= self._line_seconds and self.done < self.total:
      started, done_then = self._first
      rate = (self.done - done_then) / max(now - started, 1e-9)
      left = (self.total - self.done) / rate if rate > 0 else float('nan')
      say(f'[flan_t5x] {self.desc}: {self.unit} {self.done}/{self.total}, about {left:.0f} s left')
      self._last_line = now

  def set_postfix(self, **values) -> None:
    if self._bar is not None:
      self._bar.set_postfix(**values)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

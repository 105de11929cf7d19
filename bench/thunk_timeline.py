"""Wall time and matmul FLOPs per XLA:CPU thunk, from a profiler trace and the optimized HLO text.

A trace's thunk durations do not add up to the step's wall time, for two reasons:
- Thunks run concurrently on the two cores. Two matmuls side by side each last about twice as long
  as alone, so summing durations counts that time twice. `wall_shares` splits every instant evenly
  among the thunks running then, so the shares add up to the time any thunk ran.
- Some thunks finish asynchronously: an Eigen dot (XLA:CPU's dot when YNNPACK declines the layout,
  such as a kernel gradient `x^T @ dy`) queues its work on the thread pool, and its event ends when
  the work is queued. Its time shows as a gap in which no thunk runs. `wall_shares` gives each gap to
  the asynchronous thunk that ended last before it (or, with none, to the thunk that ended last), as
  "untraced" time. Which dot owns a gap is a guess when two were queued before it.

Pure functions of the trace's events and the HLO text (no JAX), so they are tested on hand-written
inputs (tests/test_bench.py).
"""
from __future__ import annotations

import math
import re
from typing import Sequence

# `%name = f32[4096,512]{1,0} opcode(...` ; the type may be a tuple for control flow.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* ([\w\-]+)\(', re.M)
_CONTROL_FLOW = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?\s(while|conditional|call)\(', re.M)
_COMPUTATION = re.compile(r'^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}', re.M | re.S)
# A fusion and the computation it calls (while, call and conditional name theirs otherwise).
FUSION_CALL = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?calls=%?([\w.\-]+)', re.M)
_DOT = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\][^ ]* dot\(%?([\w.\-]+), %?[\w.\-]+\)'
                  r'[^\n]*?lhs_contracting_dims=\{([\d,]*)\}', re.M)


def _dims(text: str) -> list[int]:
  return [int(d) for d in text.split(',') if d]


def dot_flops(hlo_text: str) -> dict[str, float]:
  """FLOPs of each instruction that is a dot or a fusion containing dots (2 x output x contracted)."""
  shapes = {name: _dims(dims) for name, _, dims, _ in _INSTRUCTION.findall(hlo_text)}
  flops = {}
  for name, out_dims, lhs, contracting in _DOT.findall(hlo_text):
    lhs_dims = shapes.get(lhs)
    if lhs_dims is None:
      continue
    contracted = math.prod(lhs_dims[d] for d in _dims(contracting))
    flops[name] = 2.0 * math.prod(_dims(out_dims)) * contracted
  by_computation = {}
  for computation, body in _COMPUTATION.findall(hlo_text):
    total = sum(flops.get(name, 0.0) for name in re.findall(r'^\s*(?:ROOT )?%?([\w.\-]+) = ', body, re.M))
    if total:
      by_computation[computation] = total
  for name, called in FUSION_CALL.findall(hlo_text):
    if called in by_computation:
      flops[name] = by_computation[called]
  return flops


def control_flow(hlo_text: str) -> set[str]:
  """Instructions whose thunks contain other thunks (while, conditional, call): not leaf work."""
  return {name for name, _ in _CONTROL_FLOW.findall(hlo_text)}


def wall_shares(events: Sequence[dict], asynchronous: Sequence[bool] | None = None
                ) -> tuple[list[float], list[float]]:
  """(share of wall time, untraced gap after) per event, in the events' time units.

  `events` are leaf thunks with `ts` and `dur`; `asynchronous[i]` says whether event i may leave
  work running after it ends (default: none). A share is the event's duration divided among the
  events running at each instant. A gap in which no event runs goes to the asynchronous event that
  ended last before it, else to the event that ended last. Shares plus gaps add up to the span from
  the first start to the last end.
  """
  asynchronous = asynchronous or [False] * len(events)
  share = [0.0] * len(events)
  gap_after = [0.0] * len(events)
  points = sorted([(e['ts'], 1, i) for i, e in enumerate(events)] +
                  [(e['ts'] + e['dur'], -1, i) for i, e in enumerate(events)], key=lambda p: (p[0], p[1]))
  active: set[int] = set()
  last_time, last_ended, last_async_ended = None, None, None
  for time, kind, index in points:
    if last_time is not None and time > last_time:
      if active:
        for running in active:
          share[running] += (time - last_time) / len(active)
      elif last_ended is not None:
        gap_after[last_ended if last_async_ended is None else last_async_ended] += time - last_time
    last_time = time
    if kind == 1:
      active.add(index)
    else:
      active.discard(index)
      last_ended = index
      if asynchronous[index]:
        last_async_ended = index
  return share, gap_after

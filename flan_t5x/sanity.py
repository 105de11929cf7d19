"""Sanity flags: signs that a model's numbers are a bug, not a finding.

Each flag is {'flag': name, 'detail': what was seen}. From predictions: `input_independent` (most
inputs get the same output while the targets vary), `fewer_examples` (the evaluation saw fewer
examples than it asked for). From a training history (step, loss per token): `non_finite_loss`,
`diverged` (the loss ended well above its best, or above where it started) and `zero_steps`
(training ended at or before the step it started from).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Sequence

# Most inputs get one output: flagged when the commonest prediction covers at least this share of
# the examples and exceeds the commonest target's share by MARGIN (a classifier's majority class).
SAME_OUTPUT_SHARE = 0.5
SAME_OUTPUT_MARGIN = 0.25
# Diverged: the final loss (mean of the last tenth of the logged points) above DIVERGENCE_RATIO x the
# best such window, or above START_RATIO x the first (a short run's flat loss wobbles a few percent).
DIVERGENCE_RATIO = 1.5
START_RATIO = 1.1

INPUT_INDEPENDENT = 'input_independent'
FEWER_EXAMPLES = 'fewer_examples'
NON_FINITE_LOSS = 'non_finite_loss'
DIVERGED = 'diverged'
ZERO_STEPS = 'zero_steps'


def _flag(name: str, detail: str) -> dict:
  return {'flag': name, 'detail': detail}


def _commonest_share(values: Sequence[Any]) -> tuple[Any, float]:
  value, count = collections.Counter(values).most_common(1)[0]
  return value, count / len(values)


def prediction_flags(predictions: Sequence[str], targets: Sequence[str], requested_examples: int | None) -> list[dict]:
  """Flags of one task's evaluation (predictions and targets as texts, in example order)."""
  flags = []
  if requested_examples is not None and len(predictions) < requested_examples:
    flags.append(_flag(FEWER_EXAMPLES, f'{len(predictions)} examples evaluated, {requested_examples} asked'))
  if len(predictions) >= 2:
    output, share = _commonest_share([' '.join(str(p).split()) for p in predictions])
    _, target_share = _commonest_share([' '.join(str(t).split()) for t in targets])
    if share >= SAME_OUTPUT_SHARE and share >= target_share + SAME_OUTPUT_MARGIN:
      shown = output if len(output) <= 60 else output[:57] + '...'
      flags.append(_flag(INPUT_INDEPENDENT, f'{share:.0%} of {len(predictions)} inputs get the same output '
                                            f'{shown!r} (commonest target: {target_share:.0%})'))
  return flags


def history_flags(curve: Sequence[tuple[int, float]], start_step: int) -> list[dict]:
  """Flags of one training run from its logged (step, loss per token) points; it started at `start_step`."""
  if not curve:
    return [_flag(ZERO_STEPS, f'no training step logged after step {start_step}')]
  flags = []
  last_step = max(step for step, _ in curve)
  if last_step <= start_step:
    flags.append(_flag(ZERO_STEPS, f'last logged step {last_step} is not past the start, step {start_step}'))
  bad = [(step, loss) for step, loss in curve if not math.isfinite(loss)]
  if bad:
    flags.append(_flag(NON_FINITE_LOSS, f'loss {bad[0][1]} at step {bad[0][0]} ({len(bad)} non-finite points)'))
    return flags
  losses = [loss for _, loss in sorted(curve)]
  window = max(1, len(losses) // 10)
  means = [sum(losses[i:i + window]) / window for i in range(len(losses) - window + 1)]
  first, last, best = means[0], means[-1], min(means)
  if len(losses) > window and (last > DIVERGENCE_RATIO * best or last > START_RATIO * first):
    flags.append(_flag(DIVERGED, f'final loss {last:.3f} vs best {best:.3f} and first {first:.3f} '
                                 f'(means over {window} logged points)'))
  return flags


def describe(flags: Sequence[dict]) -> str:
  return '; '.join(f"{f['flag']}: {f['detail']}" for f in flags)

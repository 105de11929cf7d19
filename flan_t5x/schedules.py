"""Learning-rate schedules as products of named factors (T5X / Mesh-TF style)."""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

KNOWN_FACTORS = ('constant', 'linear_warmup', 'rsqrt_decay', 'rsqrt_normalized_decay',
                 'decay_every', 'cosine_decay', 'linear_decay')


def create_learning_rate_scheduler(factors: str = 'constant * linear_warmup * rsqrt_decay',
                                   base_learning_rate: float = 0.5, warmup_steps: int = 1000,
                                   decay_factor: float = 0.5, steps_per_decay: int = 20000,
                                   steps_per_cycle: int = 100000, step_offset: int = 0,
                                   min_learning_rate: float = 1e-8,
                                   decay_steps: int | None = None) -> Callable:
  """Returns step -> learning rate.

  `linear_decay` goes from 1 after warmup to 0 at `decay_steps` (required for it);
  `cosine_decay` follows T5X (period `steps_per_cycle` after warmup).
  """
  for field, value in dict(factors=factors, base_learning_rate=base_learning_rate, warmup_steps=warmup_steps,
                           decay_factor=decay_factor, steps_per_decay=steps_per_decay,
                           steps_per_cycle=steps_per_cycle, step_offset=step_offset,
                           min_learning_rate=min_learning_rate, decay_steps=decay_steps).items():
    message = schedule_refusal(field, value)
    if message:
      raise ValueError(message)
  names = [n.strip() for n in factors.split('*')]
  if 'linear_decay' in names and (decay_steps is None or decay_steps <= warmup_steps):
    raise ValueError(f'linear_decay needs decay_steps > warmup_steps ({warmup_steps}), got {decay_steps}.')

  def step_fn(step):
    step = jnp.maximum(0.0, jnp.asarray(step, jnp.float32) - step_offset)
    lr = jnp.asarray(1.0, jnp.float32)
    for name in names:
      if name == 'constant':
        lr *= base_learning_rate
      elif name == 'linear_warmup':
        lr *= jnp.minimum(1.0, step / max(warmup_steps, 1))
      elif name == 'rsqrt_decay':
        lr /= jnp.sqrt(jnp.maximum(step, warmup_steps))
      elif name == 'rsqrt_normalized_decay':
        lr *= jnp.sqrt(warmup_steps) / jnp.sqrt(jnp.maximum(step, warmup_steps))
      elif name == 'decay_every':
        lr *= decay_factor ** (step // steps_per_decay)
      elif name == 'cosine_decay':
        progress = jnp.maximum(0.0, (step - warmup_steps) / float(steps_per_cycle))
        lr *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
      elif name == 'linear_decay':
        lr *= jnp.clip(1.0 - (step - warmup_steps) / (decay_steps - warmup_steps), 0.0, 1.0)
    return jnp.maximum(lr, min_learning_rate)

  return step_fn


_STEP_FIELDS = {'warmup_steps': 0, 'step_offset': 0, 'steps_per_decay': 1, 'steps_per_cycle': 1}
_NUMBER_FIELDS = ('base_learning_rate', 'decay_factor', 'min_learning_rate')


def schedule_refusal(field: str, value) -> str | None:
  """Why `create_learning_rate_scheduler` cannot use this value (None: it can). Checked when gin
  parses the files too (gin_utils), so a bad learning-rate setting fails before MODEL_DIR is touched."""
  where = f'utils.create_learning_rate_scheduler.{field} = {value!r}'
  if field == 'factors':
    if not isinstance(value, str):
      return f'{where}: expected a string of factors joined by *, e.g. \'constant * rsqrt_decay\'.'
    unknown = [n.strip() for n in value.split('*') if n.strip() not in KNOWN_FACTORS]
    if unknown:
      return f'{where}: unknown factors {unknown}; known: {", ".join(KNOWN_FACTORS)}.'
  if field in _NUMBER_FIELDS and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
    return f'{where}: expected a number (without quotes).'
  if field in _STEP_FIELDS and (isinstance(value, bool) or not isinstance(value, int) or value < _STEP_FIELDS[field]):
    return f'{where}: expected a whole number of steps, at least {_STEP_FIELDS[field]}.'
  if field == 'decay_steps' and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                       or value < 1):
    return f'{where}: expected None or a whole number of steps, at least 1.'
  return None


create_learning_rate_scheduler.refusal = schedule_refusal  # read by gin_utils when the files are parsed

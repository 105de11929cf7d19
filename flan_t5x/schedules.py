"""Learning-rate schedules as products of named factors (T5X / Mesh-TF style)."""

from __future__ import annotations

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
  names = [n.strip() for n in factors.split('*')]
  unknown = [n for n in names if n not in KNOWN_FACTORS]
  if unknown:
    raise ValueError(f'Unknown learning-rate factors {unknown} in {factors!r}; known: {KNOWN_FACTORS}.')
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

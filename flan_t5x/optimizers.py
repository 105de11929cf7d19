"""Optimizer configs (plain dataclasses; gin binds them at the entry point).

`Adafactor` reproduces T5X's Adafactor defaults with optax building blocks:
factored second moments (decay 1 - (t+1)^-0.8), update clipping by block RMS,
learning rate, then scaling by the parameter's RMS (floored at epsilon2).
For rank-2 kernels (all of ours unless layers are scanned) the factored dims
are the same as T5X's; tests/engine/test_optimizers.py checks one update
against a NumPy transcription of T5X's rule.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import optax

Schedule = Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class Adafactor:
  decay_rate: float = 0.8
  step_offset: int = 0
  multiply_by_parameter_scale: bool = True
  clipping_threshold: float | None = 1.0
  epsilon1: float = 1e-30
  epsilon2: float = 1e-3
  min_dim_size_to_factor: int = 128
  factored: bool = True
  beta1: float | None = None

  def create(self, learning_rate_fn: Schedule | float) -> optax.GradientTransformation:
    chain = [optax.scale_by_factored_rms(
        factored=self.factored, decay_rate=self.decay_rate, step_offset=self.step_offset,
        min_dim_size_to_factor=self.min_dim_size_to_factor, epsilon=self.epsilon1)]
    if self.clipping_threshold is not None:
      chain.append(optax.clip_by_block_rms(self.clipping_threshold))
    chain.append(optax.scale_by_learning_rate(learning_rate_fn))
    if self.multiply_by_parameter_scale:
      chain.append(optax.scale_by_param_block_rms(min_scale=self.epsilon2))
    if self.beta1 is not None:
      chain.append(optax.ema(self.beta1, debias=False))
    return optax.chain(*chain)


@dataclasses.dataclass(frozen=True)
class AdamW:
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  global_norm_clip: float | None = None

  def create(self, learning_rate_fn: Schedule | float) -> optax.GradientTransformation:
    adamw = optax.adamw(learning_rate_fn, b1=self.b1, b2=self.b2, eps=self.eps,
                        weight_decay=self.weight_decay)
    if self.global_norm_clip is None:
      return adamw
    return optax.chain(optax.clip_by_global_norm(self.global_norm_clip), adamw)


@dataclasses.dataclass(frozen=True)
class OptaxChain:
  """T5X's `optimizers.chain(transformations)`: optax transformations applied in order, as T5X's
  OptaxWrapper. The learning rate is the transformations' own (e.g. `optax.adamw.learning_rate`):
  the Trainer's learning_rate_fn is only logged, as in T5X."""
  transformations: tuple = ()

  def create(self, learning_rate_fn: Schedule | float) -> optax.GradientTransformation:
    del learning_rate_fn
    return optax.chain(*self.transformations)


def chain(transformations) -> OptaxChain:
  """T5X's name for OptaxChain (`OPTIMIZER = @optimizers.chain()`)."""
  return OptaxChain(tuple(transformations))

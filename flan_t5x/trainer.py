"""Train state, sharded initialization, and jitted train / eval steps."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import train_state

PyTree = Any


# Re-exported: tests and callers name the state through the trainer module.
TrainState = train_state.TrainState


class Trainer:
  """Owns the optimizer and the partitioned step functions for one model.

  Dropout randomness is `fold_in(PRNGKey(seed), step)`, so a resumed run draws
  the same masks as an uninterrupted one without storing RNG state.
  """

  def __init__(self, model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
               learning_rate_fn: Callable | float, batch_size: int,
               task_feature_lengths: Mapping[str, int], num_microbatches: int | None = None,
               seed: int = 0, optimizer_def: Any = None, skip_nonfinite_grads: bool = False):
    self.model = model
    # Guard: a step whose gradient norm is not finite leaves params and optimizer state as they
    # were (the step counter still advances) and is counted in the `skipped_steps` metric.
    self.skip_nonfinite_grads = skip_nonfinite_grads
    self.partitioner = partitioner
    self.batch_size = batch_size
    self.num_microbatches = int(num_microbatches or 1)
    if batch_size % self.num_microbatches:
      raise ValueError(f'Batch size {batch_size} is not divisible by num_microbatches={self.num_microbatches}.')
    partitioner.check_batch_size(batch_size)
    if (batch_size // self.num_microbatches) % partitioner.data_parallel_size:
      raise ValueError(f'Microbatch size {batch_size // self.num_microbatches} is not divisible by the '
                       f'data-parallel mesh size {partitioner.data_parallel_size}.')
    self.seed = seed
    self.learning_rate_fn = learning_rate_fn
    optimizer_def = optimizer_def if optimizer_def is not None else model.optimizer_def
    if optimizer_def is None:
      raise ValueError('No optimizer: pass optimizer_def to the Trainer or the model.')
    self.optimizer = optimizer_def.create(learning_rate_fn)
    # Parameter shapes do not depend on the lengths (train_state derives them once); the lengths
    # are still checked here, where a run's configuration first meets the model.
    missing = sorted({'inputs', 'targets'} - set(task_feature_lengths))
    if missing:
      raise ValueError(f'TASK_FEATURE_LENGTHS needs {missing}, got {dict(task_feature_lengths)}.')

    self.param_layout = train_state.param_layout(model, partitioner)
    self.abstract_state, self.state_shardings = train_state.state_layout(
        self.param_layout, self.optimizer, partitioner)
    self._build_step_functions()

  # ----------------------------------------------------------------- init
  def _init_state(self, rng) -> TrainState:
    params = train_state.init_params(self.model, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params))

  def init_state(self, rng: jax.Array | None = None) -> TrainState:
    """Fresh parameters, created directly in their shardings."""
    rng = jax.random.PRNGKey(self.seed) if rng is None else rng
    return jax.jit(self._init_state, out_shardings=self.state_shardings)(rng)

  def state_from_params(self, params: PyTree, step: int = 0) -> TrainState:
    """Fresh optimizer state around given (e.g. pretrained) parameters."""
    make = lambda p, s: TrainState(step=jnp.asarray(s, jnp.int32), params=p, opt_state=self.optimizer.init(p))
    return jax.jit(make, out_shardings=self.state_shardings)(params, step)

  # ---------------------------------------------------------- step functions
  def _build_step_functions(self):
    data = self.partitioner.data_sharding
    rep = self.partitioner.replicated
    self._train_step = self.partitioner.partition(
        self._train_step_impl, in_shardings=(self.state_shardings, data, rep),
        out_shardings=(self.state_shardings, rep), donate_argnums=(0,))
    self._eval_step = self.partitioner.partition(
        self._eval_step_impl, in_shardings=(self.state_shardings.params, data), out_shardings=rep)

  def _grads_and_metrics(self, params, batch, dropout_rng):
    factor, weights_BxT = self.model.normalizing_factor_and_weights(batch)
    grad_fn = jax.value_and_grad(
        lambda p, b, w, rng: self.model.loss_fn(p, b, rng, normalization=(factor, w)), has_aux=True)
    if self.num_microbatches == 1:
      (_, metrics), grads = grad_fn(params, batch, weights_BxT, dropout_rng)
      return grads, metrics
    num_mb = self.num_microbatches
    # Row r of microbatch i is global row r*num_mb + i: keeps each device's rows local.
    split = lambda x: jnp.swapaxes(x.reshape((x.shape[0] // num_mb, num_mb) + x.shape[1:]), 0, 1)
    microbatches = jax.tree.map(split, (dict(batch), weights_BxT))

    def accumulate(carry, inputs):
      index, (microbatch, weights) = inputs
      (_, metrics), grads = grad_fn(params, microbatch, weights, jax.random.fold_in(dropout_rng, index))
      return jax.tree.map(jnp.add, carry, (grads, metrics)), None

    (_, metrics_shape), grads_shape = jax.eval_shape(
        grad_fn, params, *jax.tree.map(lambda x: x[0], microbatches), dropout_rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (grads_shape, metrics_shape))
    (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num_mb), microbatches))
    return grads, metrics

  def _train_step_impl(self, state: TrainState, batch, base_rng):
    dropout_rng = jax.random.fold_in(base_rng, state.step)
    grads, metrics = self._grads_and_metrics(state.params, batch, dropout_rng)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    skipped = jnp.zeros((), bool)
    if self.skip_nonfinite_grads:
      skipped = jnp.logical_not(jnp.isfinite(optax.tree.norm(grads)))
      keep_old = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skipped, o, n), new, old)
      params, opt_state = keep_old(params, state.params), keep_old(opt_state, state.opt_state)
      # The skipped step's (non-finite) loss sums would poison the logged averages.
      metrics = jax.tree.map(lambda m: jnp.where(skipped, jnp.zeros_like(m), m), metrics)
    lr = self.learning_rate_fn(state.step) if callable(self.learning_rate_fn) else self.learning_rate_fn
    # A non-finite update (e.g. from a NaN learning rate or overflow) must stop
    # training before this state can be checkpointed.
    params_finite = jnp.isfinite(optax.tree.norm(params))
    metrics = dict(metrics, learning_rate=jnp.asarray(lr, jnp.float32), params_finite=params_finite,
                   finite=jnp.logical_and(params_finite, jnp.isfinite(metrics['loss'])),
                   skipped_steps=skipped.astype(jnp.float32))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _eval_step_impl(self, params, batch):
    _, metrics = self.model.loss_fn(params, batch, None)
    return metrics

  def train_step(self, state: TrainState, local_batch: Mapping[str, np.ndarray]):
    """One optimizer step on this host's rows of the global batch; `state` is donated."""
    return self._train_step(state, self.partitioner.shard_batch(local_batch), jax.random.PRNGKey(self.seed))

  def eval_step(self, params: PyTree, local_batch: Mapping[str, np.ndarray]):
    return self._eval_step(params, self.partitioner.shard_batch(local_batch))

  def param_logical_specs(self) -> PyTree:
    return self.param_layout.logical_specs


"""Train state, sharded initialization, and jitted train / eval steps."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flan_t5x import adapters
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import prompt_tuning
from flan_t5x import train_state

PyTree = Any


# Re-exported: tests and callers name the state through the trainer module.
TrainState = train_state.TrainState


class Trainer:
  """Owns the optimizer and the partitioned step functions for one model.

  Dropout randomness is `fold_in(PRNGKey(seed), step)`, so a resumed run draws
  the same masks as an uninterrupted one without storing RNG state.

  A PEFT model (LoRA / prompt tuning, flan_t5x.adapters) trains only its adapters: the
  TrainState, optimizer state and checkpoints hold those; the base parameters are
  `frozen_params`, a separate (sharded) input of every step with no optimizer state.
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
    self.optimizer_def = optimizer_def
    self.optimizer = optimizer_def.create(learning_rate_fn)
    # Parameter shapes do not depend on the lengths (train_state derives them once); the lengths
    # are still checked here, where a run's configuration first meets the model.
    missing = sorted({'inputs', 'targets'} - set(task_feature_lengths))
    if missing:
      raise ValueError(f'TASK_FEATURE_LENGTHS needs {missing}, got {dict(task_feature_lengths)}.')

    self.param_layout = train_state.param_layout(model, partitioner)
    self.is_peft = adapters.is_peft(model.config)
    self.trainable_layout, self.frozen_layout = (
        adapters.split_layout(self.param_layout) if self.is_peft else
        (self.param_layout, train_state.ParamLayout({}, {}, {})))
    self.frozen_params: PyTree = {}  # the base model of a PEFT run; set by init/restore
    self.abstract_state, self.state_shardings = train_state.state_layout(
        self.trainable_layout, self.optimizer, partitioner)
    self._build_step_functions()

  # ----------------------------------------------------------------- init
  def _init_state(self, rng):
    params = train_state.init_params(self.model, rng)
    trainable, frozen = adapters.split(params) if self.is_peft else (params, {})
    state = TrainState(step=jnp.zeros((), jnp.int32), params=trainable, opt_state=self.optimizer.init(trainable))
    return state, frozen

  def init_state(self, rng: jax.Array | None = None) -> TrainState:
    """Fresh parameters, created directly in their shardings (a PEFT model's base: `frozen_params`)."""
    rng = jax.random.PRNGKey(self.seed) if rng is None else rng
    state, self.frozen_params = jax.jit(
        self._init_state, out_shardings=(self.state_shardings, self.frozen_layout.shardings))(rng)
    return state

  @property
  def initial_params_abstract(self) -> PyTree:
    """Restore target of INITIAL_CHECKPOINT_PATH: the whole model, or a PEFT model's base."""
    return self.frozen_layout.abstract if self.is_peft else self.abstract_state.params

  def fresh_adapters(self, base_params: PyTree, rng: jax.Array | None = None) -> PyTree:
    """Initial adapters on their shardings; a 'vocab' prompt samples the base's embedding table."""
    rng = jax.random.PRNGKey(self.seed) if rng is None else rng
    pt = self.model.config.prompt_tuning

    def init(key, embedding_VxE):
      trainable, _ = adapters.split(train_state.init_params(self.model, key))
      if pt is not None and pt.init == 'vocab':
        trainable[adapters.PROMPT_MODULE]['prompt'] = prompt_tuning.init_prompt(
            jax.random.fold_in(key, 1), pt, embedding_VxE)
      return trainable
    return jax.jit(init, out_shardings=self.trainable_layout.shardings)(
        rng, base_params['token_embedder']['embedding'])

  def state_from_params(self, params: PyTree, step: int = 0, adapter_params: PyTree = None) -> TrainState:
    """Fresh optimizer state around given (e.g. pretrained) parameters.

    For a PEFT model `params` is the base (kept as `frozen_params`) and the state holds
    `adapter_params`, fresh adapters if None.
    """
    if self.is_peft:
      self.frozen_params = params
      params = self.fresh_adapters(params) if adapter_params is None else adapter_params
    make = lambda p, s: TrainState(step=jnp.asarray(s, jnp.int32), params=p, opt_state=self.optimizer.init(p))
    return jax.jit(make, out_shardings=self.state_shardings)(params, step)

  def full_params(self, trainable: PyTree) -> PyTree:
    """The model's whole parameter tree: the trained parameters plus the frozen base (if any)."""
    return adapters.combine(trainable, self.frozen_params) if self.is_peft else trainable

  # ---------------------------------------------------------- step functions
  def _build_step_functions(self):
    data = self.partitioner.data_sharding
    rep = self.partitioner.replicated
    frozen = self.frozen_layout.shardings
    self._train_step = self.partitioner.partition(
        self._train_step_impl, in_shardings=(self.state_shardings, frozen, data, rep),
        out_shardings=(self.state_shardings, rep), donate_argnums=(0,))
    self._eval_step = self.partitioner.partition(
        self._eval_step_impl, in_shardings=(self.state_shardings.params, frozen, data), out_shardings=rep)

  def _grads_and_metrics(self, params, frozen, batch, dropout_rng):
    """Gradients with respect to `params` only; `frozen` (a PEFT base) gets none."""
    factor, weights_BxT = self.model.normalizing_factor_and_weights(batch)
    grad_fn = jax.value_and_grad(
        lambda p, b, w, rng: self.model.loss_fn(adapters.combine(p, frozen), b, rng,
                                                normalization=(factor, w)), has_aux=True)
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

  def _train_step_impl(self, state: TrainState, frozen, batch, base_rng):
    dropout_rng = jax.random.fold_in(base_rng, state.step)
    grads, metrics = self._grads_and_metrics(state.params, frozen, batch, dropout_rng)
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

  def _eval_step_impl(self, params, frozen, batch):
    _, metrics = self.model.loss_fn(adapters.combine(params, frozen), batch, None)
    return metrics

  def train_step(self, state: TrainState, local_batch: Mapping[str, np.ndarray]):
    """One optimizer step on this host's rows of the global batch; `state` is donated."""
    return self._train_step(state, self.frozen_params, self.partitioner.shard_batch(local_batch),
                            jax.random.PRNGKey(self.seed))

  def eval_step(self, params: PyTree, local_batch: Mapping[str, np.ndarray]):
    """`params`: the trained parameters (a PEFT run's adapters; the base is added here)."""
    return self._eval_step(params, self.frozen_params, self.partitioner.shard_batch(local_batch))

  def param_logical_specs(self) -> PyTree:
    return self.param_layout.logical_specs


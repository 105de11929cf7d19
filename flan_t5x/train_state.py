"""The train state and the one derivation of its shapes and shardings.

The trainer, inference and every restore take their abstract parameters (shapes,
dtypes, shardings) from `param_layout`, and the trainer its optimizer state's from
`state_layout`, so a checkpoint written by one is read by the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flan_t5x import models
from flan_t5x import partitioning

PyTree = Any
# T5 parameter shapes do not depend on the batch or sequence lengths (relative position
# buckets), so one small dummy input shapes them for every job.
_INIT_SHAPE = (1, 8, 8)  # batch, input length, target length


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: PyTree
  opt_state: PyTree


@dataclasses.dataclass(frozen=True)
class ParamLayout:
  logical_specs: PyTree  # PartitionSpecs of logical axis names, per parameter
  shardings: PyTree  # NamedShardings on the partitioner's mesh
  abstract: PyTree  # ShapeDtypeStructs carrying those shardings (a restore target)


def init_params(model: models.EncoderDecoderModel, rng: jax.Array) -> PyTree:
  """Fresh, unboxed parameters."""
  return nn.meta.unbox(model.init_params(rng, *_INIT_SHAPE))


def _boxed_abstract_params(model: models.EncoderDecoderModel) -> PyTree:
  return jax.eval_shape(lambda r: model.init_params(r, *_INIT_SHAPE), jax.random.PRNGKey(0))


def param_logical_specs(model: models.EncoderDecoderModel) -> PyTree:
  """PartitionSpecs of logical axis names, per parameter."""
  return nn.get_partition_spec(_boxed_abstract_params(model))


def param_layout(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner) -> ParamLayout:
  boxed = _boxed_abstract_params(model)
  logical_specs = nn.get_partition_spec(boxed)
  shardings = partitioner.logical_to_sharding(logical_specs)
  shapes = nn.meta.unbox(boxed)
  partitioner.check_divisible(shapes, shardings)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
  return ParamLayout(logical_specs, shardings, abstract)


def state_layout(params: ParamLayout, optimizer: optax.GradientTransformation,
                 partitioner: partitioning.PjitPartitioner) -> tuple[TrainState, TrainState]:
  """(abstract TrainState with shardings, TrainState of shardings)."""
  abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params.abstract)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  # Optimizer leaves shaped like their parameter (Adam moments, unfactored Adafactor) share
  # its sharding; factored row/column statistics are small and replicated.
  opt_shardings = optax.tree_map_params(
      optimizer,
      lambda leaf, param, sharding: sharding if leaf.shape == param.shape else partitioner.replicated,
      abstract_opt, abstract_params, params.shardings,
      transform_non_params=lambda _: partitioner.replicated)
  shardings = TrainState(step=partitioner.replicated, params=params.shardings, opt_state=opt_shardings)
  shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
  return abstract, shardings

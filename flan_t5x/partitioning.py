"""Device mesh, logical-axis rules and jit-with-shardings (T5X's PjitPartitioner).

The model names every parameter and activation dimension with a logical axis
('batch', 'embed', 'mlp', ...). One rules table maps logical names to mesh
axes ('data', 'model', optionally 'replica'); everything else is derived.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalAxisRules = Sequence[tuple[str, Any]]
PyTree = Any

# Devices a partitioner built without `devices` uses instead of jax.devices(): `python -m
# flan_t5x.plan` builds the gin-configured partitioner on a TPU slice's compile-only devices.
_target_devices: list | None = None


def compute_platform() -> str:
  """The platform the step functions being traced will run on: the target devices' (inside
  `target_devices`), else JAX's default backend. Platform-specific forms (flan_t5x.attention_kernel's
  CPU paths) ask this, so that a TPU plan traces what a TPU runs."""
  if _target_devices:
    return _target_devices[0].platform
  return jax.default_backend()


@contextlib.contextmanager
def target_devices(devices: Sequence[jax.Device]):
  """Partitioners created inside (with no `devices` argument) lay their mesh over `devices`, and
  step functions traced inside take the forms of the devices' platform (compute_platform)."""
  global _target_devices
  previous, _target_devices = _target_devices, list(devices)
  try:
    yield
  finally:
    _target_devices = previous

_REPLICATED_AXES = ('relpos_buckets', 'abspos_buckets', 'length', 'layers', 'stack',
                    'mlp_activations', 'kv_length', 'lora_rank', 'prompt_length')


def standard_logical_axis_rules(activation_partitioning_dims: int = 1,
                                parameter_partitioning_dims: int = 1,
                                additional_rules: LogicalAxisRules | None = None) -> tuple:
  """T5X's default rules; 2-D options also shard 'embed' over 'model'/'data'."""
  base = [('batch', 'data'), ('vocab', 'model'), ('mlp', 'model'), ('heads', 'model'),
          ('kv', None), ('joined_kv', 'model')]
  embed_rules = {
      (1, 1): [('embed', None)],
      (2, 1): [('embed', 'model')],
      (1, 2): [('embed', 'data')],
      # Activations take 'model' first; parameters fall through to 'data'.
      (2, 2): [('embed', 'model'), ('embed', 'data')],
  }
  key = (activation_partitioning_dims, parameter_partitioning_dims)
  if key not in embed_rules:
    raise ValueError(f'activation_partitioning_dims={key[0]}, parameter_partitioning_dims={key[1]} '
                     'is not supported; each must be 1 or 2.')
  rules = base + embed_rules[key] + [(name, None) for name in _REPLICATED_AXES]
  rules.extend(additional_rules or ())
  return tuple(rules)


def _tree_paths(tree: PyTree, is_leaf=None):
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


def check_logical_axes(names: Sequence[str | None], rules: LogicalAxisRules, where: str = '') -> None:
  """Raises ValueError naming any logical axis that no rule maps."""
  known = {rule[0] for rule in rules}
  unknown = [n for n in names if n is not None and n not in known]
  if unknown:
    raise ValueError(f'Logical axis {unknown} {where}has no rule in logical_axis_rules; '
                     f'rules cover {sorted(known)}. Add e.g. ({unknown[0]!r}, None) via additional_rules.')


class PjitPartitioner:
  """Builds a ('data', 'model') mesh (or ('replica', 'data', 'model')) and jits with shardings."""

  def __init__(self, num_partitions: int | None = 1,
               model_parallel_submesh: tuple[int, ...] | None = None,
               logical_axis_rules: LogicalAxisRules | None = None,
               num_replicas: int = 1, devices: Sequence[jax.Device] | None = None,
               backend: str | None = None, params_on_devices: bool = True):
    """T5X's `backend` (the platform whose devices make the mesh) must be this process's platform
    (None: JAX's default); `params_on_devices` only T5X's default True."""
    if not params_on_devices:
      raise ValueError('partitioning.PjitPartitioner.params_on_devices = False: flan_t5x keeps parameters on the '
                       'devices (T5X\'s default); remove the binding.')
    if backend is not None and devices is None and _target_devices is None:
      devices = jax.devices(backend)  # RuntimeError naming the platform if this process has none
    if devices is None:
      devices = _target_devices if _target_devices is not None else jax.devices()
    devices = list(devices)
    if model_parallel_submesh is not None:
      # T5X gives an (x, y, z, core) TPU tile; its size is the model-parallel width.
      num_partitions = int(math.prod(model_parallel_submesh))
    num_partitions = int(num_partitions or 1)
    if num_partitions < 1 or len(devices) % num_partitions:
      raise ValueError(f'{len(devices)} devices cannot be split into model-parallel groups of '
                       f'{num_partitions}.')
    num_data = len(devices) // num_partitions
    if num_replicas < 1 or num_data % num_replicas:
      raise ValueError(f'Data-parallel size {num_data} is not divisible by num_replicas={num_replicas}.')
    if num_replicas > 1:
      shape, names = (num_replicas, num_data // num_replicas, num_partitions), ('replica', 'data', 'model')
    else:
      shape, names = (num_data, num_partitions), ('data', 'model')
    self.mesh = Mesh(_device_grid(devices, shape), names)
    rules = tuple(logical_axis_rules if logical_axis_rules is not None else standard_logical_axis_rules())
    if num_replicas > 1:  # data parallelism spans both replica and data axes.
      rules = tuple((name, ('replica', 'data') if target == 'data' else target) for name, target in rules)
    self.logical_axis_rules = rules
    logging.info('Mesh %s over %d devices.', dict(self.mesh.shape), len(devices))

  # ---------------------------------------------------------------- mesh facts
  @property
  def data_axes(self) -> tuple[str, ...]:
    return ('replica', 'data') if 'replica' in self.mesh.axis_names else ('data',)

  @property
  def data_parallel_size(self) -> int:
    return int(math.prod(self.mesh.shape[a] for a in self.data_axes))

  @property
  def data_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec(self.data_axes))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def check_batch_size(self, global_batch_size: int) -> None:
    if global_batch_size % self.data_parallel_size:
      raise ValueError(f'Global batch size {global_batch_size} is not divisible by the data-parallel '
                       f'mesh size {self.data_parallel_size} (mesh {dict(self.mesh.shape)}).')
    if global_batch_size % jax.process_count():
      raise ValueError(f'Global batch size {global_batch_size} is not divisible by the '
                       f'{jax.process_count()} processes.')

  def local_batch_size(self, global_batch_size: int) -> int:
    self.check_batch_size(global_batch_size)
    return global_batch_size // jax.process_count()

  # ------------------------------------------------------------- logical axes
  @contextlib.contextmanager
  def context(self):
    """Mesh + rules active while tracing, so activation constraints resolve."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.logical_axis_rules):
      yield

  def logical_to_sharding(self, logical_specs: PyTree) -> PyTree:
    """Maps a tree of logical PartitionSpecs (None = replicated) to NamedShardings."""
    is_spec = lambda x: isinstance(x, PartitionSpec) or x is None
    for path, spec in _tree_paths(logical_specs, is_leaf=is_spec):
      if spec is not None:
        check_logical_axes(spec, self.logical_axis_rules, where=f'of {path} ')

    def to_sharding(spec):
      if spec is None:
        return self.replicated
      mesh_spec = nn.logical_to_mesh_axes(spec, self.logical_axis_rules)
      return NamedSharding(self.mesh, mesh_spec)
    return jax.tree.map(to_sharding, logical_specs, is_leaf=is_spec)

  def check_divisible(self, shapes: PyTree, shardings: PyTree) -> None:
    """Clear error when a dimension cannot be split over its mesh axes."""
    for (path, shape), (_, sharding) in zip(_tree_paths(shapes), _tree_paths(shardings)):
      for dim, axes in zip(shape.shape, sharding.spec):
        if axes is None:
          continue
        axes = (axes,) if isinstance(axes, str) else axes
        parts = int(math.prod(self.mesh.shape[a] for a in axes))
        if dim % parts:
          raise ValueError(f'{path}: dimension {dim} is not divisible by mesh axes {axes} of size {parts} '
                           f'(shape {shape.shape}, spec {sharding.spec}).')

  # ---------------------------------------------------------------- data / jit
  def shard_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles global arrays, sharded over the data axes, from this host's rows."""
    out = {}
    for name, local in local_batch.items():
      local = np.asarray(local)
      global_rows = local.shape[0] * jax.process_count()
      self.check_batch_size(global_rows)
      out[name] = jax.make_array_from_process_local_data(
          self.data_sharding, local, (global_rows,) + local.shape[1:])
    return out

  def partition(self, fn: Callable, in_shardings, out_shardings, donate_argnums=()) -> Callable:
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                     donate_argnums=donate_argnums)

    def call(*args):
      with self.context():
        return jitted(*args)
    call.lower = lambda *args: _lower_in(self, jitted, args)
    return call


def _lower_in(partitioner: PjitPartitioner, jitted, args):
  with partitioner.context():
    return jitted.lower(*args)


def _device_grid(devices: Sequence[jax.Device], shape: tuple[int, ...]) -> np.ndarray:
  """Topology-aware device order on accelerators; plain order on CPU."""
  if devices[0].platform != 'cpu':
    try:
      from jax.experimental import mesh_utils
      return mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError) as err:
      logging.warning('create_device_mesh failed (%s); using device order.', err)
  return np.asarray(devices, dtype=object).reshape(shape)

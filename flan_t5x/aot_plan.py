"""Ahead-of-time plans: the jobs' own step functions compiled for devices this host does not own.

`plan_train` lowers the Trainer's jitted train step (optimizer, microbatches, remat / scan, loss,
packed feature lengths, dtypes: whatever the gin configured) on abstract state, and `plan_decode`
the InferenceRunner's decode function (KV cache, beams) on abstract parameters; both compile with
XLA for the partitioner's devices (a TPU slice from libtpu's topology descriptions) and read back
XLA's memory and cost analyses. Nothing is allocated: an XXL plan runs on a laptop.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from flan_t5x import inference
from flan_t5x import models
from flan_t5x import train_state

PyTree = Any

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4,
                'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}


@dataclasses.dataclass
class Plan:
  """One job compiled for one mesh: bytes per device, FLOPs, XLA's time estimate, collectives."""
  job: str                      # 'train' or 'decode'
  mesh: dict[str, int]
  batch_size: int
  lengths: dict[str, int]       # train: inputs/targets; decode: inputs/targets (max decode length)
  tokens_per_step: int          # train: (inputs + targets) x batch; decode: decoded tokens x batch
  fits: bool
  hbm_bytes_per_device: int
  state_bytes: dict[str, int]   # params, opt_state (train) per device, from the shardings
  argument_bytes: int = 0
  output_bytes: int = 0
  alias_bytes: int = 0
  temp_bytes: int = 0
  code_bytes: int = 0
  total_bytes: int = 0          # what the device must hold at the step's peak
  xla_flops: float = 0.0        # per device, XLA's count (a loop's body counted once)
  model_flops: float = 0.0      # per step, whole mesh: the model's matmul FLOPs (MFU's numerator)
  bytes_accessed: float = 0.0
  xla_seconds: float | None = None  # XLA's own estimate of one call ('optimal_seconds')
  collectives: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  compile_seconds: float = 0.0
  error: str | None = None      # XLA's out-of-memory message when the program does not fit
  settings: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def margin_bytes(self) -> int:
    return self.hbm_bytes_per_device - self.total_bytes


# ------------------------------------------------------------------ byte counts

def bytes_per_device(abstract: PyTree, shardings: PyTree) -> int:
  """Bytes one device holds of `abstract` laid out by `shardings` (its largest shard per leaf)."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    shard = sharding.shard_shape(tuple(leaf.shape))
    total += math.prod(shard) * jnp.dtype(leaf.dtype).itemsize
  return int(total)


def _shape_bytes(shape_text: str) -> int:
  """'bf16[128,512]{1,0}' or a tuple '(f32[4], bf16[2,2])' -> bytes."""
  total = 0
  for dtype, dims in re.findall(r'\b([a-z]+\d*)\[([\d,]*)\]', shape_text):
    if dtype in _DTYPE_BYTES:
      total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)
  return total


_OP_RE = re.compile(r'=\s*(.+?)\s+(' + '|'.join(COLLECTIVES) + r')(-start)?\(')


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """Collective ops of a compiled HLO module: {op: {'count', 'bytes'}} (result bytes per device).

  Asynchronous pairs count once (their -start); ops inside a while loop's body count once."""
  found = {op: {'count': 0, 'bytes': 0} for op in COLLECTIVES}
  for line in hlo_text.splitlines():
    match = _OP_RE.search(line)
    if match is None:
      continue
    shape, op, start = match.groups()
    shape_bytes = _shape_bytes(shape)
    if start and shape.startswith('('):  # a -start's result holds its operands and outputs
      shape_bytes //= 2
    found[op]['count'] += 1
    found[op]['bytes'] += shape_bytes
  return {op: counts for op, counts in found.items() if counts['count']}


# -------------------------------------------------------------------- FLOPs

def t5_forward_flops_per_example(config, inputs: int, targets: int) -> float:
  """Matmul FLOPs of one example's forward pass (2 per multiply-add), T5.1.1 (gated MLP)."""
  emb, heads, head_dim, mlp = config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim
  kv = heads * head_dim
  mlp_mats = len(config.mlp_activations) + 1
  per_encoder_token = (4 * emb * kv + mlp_mats * emb * mlp) * 2 + 2 * inputs * kv * 2
  per_decoder_token = ((4 * emb * kv) + (2 * emb * kv) + mlp_mats * emb * mlp) * 2 + 2 * (targets + inputs) * kv * 2
  cross_kv_per_encoder_token = 2 * emb * kv * 2  # each decoder layer projects the encoder output once
  logits = 2 * emb * config.vocab_size
  return float(inputs * config.num_encoder_layers * per_encoder_token
               + targets * config.num_decoder_layers * per_decoder_token
               + inputs * config.num_decoder_layers * cross_kv_per_encoder_token
               + targets * logits)


def t5_train_flops(config, batch: int, inputs: int, targets: int) -> float:
  """Forward plus backward (twice the forward's matmuls), without rematerialization: model FLOPs."""
  return 3.0 * batch * t5_forward_flops_per_example(config, inputs, targets)


def t5_decode_flops(config, batch: int, inputs: int, targets: int, num_decodes: int = 1
                    ) -> tuple[float, float]:
  """(FLOPs of encoding `batch` inputs and projecting the cross-attention keys and values once,
  FLOPs of one decoder step for each of the batch's `num_decodes` sequences), whole batch."""
  emb, kv, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  mlp_mats = len(config.mlp_activations) + 1
  encoder = t5_forward_flops_per_example(config, inputs, 0)  # includes the cross k/v projections
  per_step = (config.num_decoder_layers * ((6 * emb * kv + mlp_mats * emb * mlp) * 2
                                           + 2 * (targets + inputs) * kv * 2)
              + 2 * emb * config.vocab_size)
  return float(batch * encoder), float(batch * num_decodes * per_step)


def decode_cache_bytes(config, rows_per_device: int, inputs: int, targets: int, num_decodes: int,
                       model_partitions: int) -> int:
  """Keys and values one device caches at full length: self-attention (targets) and cross-attention
  (inputs) per decoder layer and sequence, heads split over the model axis."""
  kv = config.num_heads * config.head_dim
  if config.num_heads % model_partitions == 0:
    kv //= model_partitions
  itemsize = jnp.dtype(config.dtype).itemsize
  return int(2 * config.num_decoder_layers * (inputs + targets) * kv * rows_per_device * num_decodes * itemsize)


# -------------------------------------------------------------- compiling

def _abstract(tree: PyTree, shardings: PyTree) -> PyTree:
  return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                      tree, shardings)


def train_batch_spec(model: models.EncoderDecoderModel, task_feature_lengths: Mapping[str, int],
                     pack: bool) -> dict[str, tuple[int, np.dtype]]:
  """{feature: (length, dtype)} of a training batch, from SeqIO's real feature converter."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lengths = {'inputs': int(task_feature_lengths['inputs']), 'targets': int(task_feature_lengths['targets'])}
  example = {'inputs': tf.constant([3, 4, 1], tf.int32), 'targets': tf.constant([5, 1], tf.int32)}
  dataset = tf.data.Dataset.from_tensors(example)
  converted = model.feature_converter(pack=pack)(dataset, lengths)
  return {name: (int(spec.shape[-1]), np.dtype(spec.dtype.as_numpy_dtype))
          for name, spec in converted.element_spec.items()}


def _fill_from_compiled(plan: Plan, compiled) -> None:
  memory = compiled.memory_analysis()
  plan.argument_bytes = int(memory.argument_size_in_bytes)
  plan.output_bytes = int(memory.output_size_in_bytes)
  plan.alias_bytes = int(memory.alias_size_in_bytes)
  plan.temp_bytes = int(memory.temp_size_in_bytes)
  plan.code_bytes = int(memory.generated_code_size_in_bytes)
  plan.total_bytes = (plan.argument_bytes + plan.output_bytes - plan.alias_bytes + plan.temp_bytes
                      + plan.code_bytes)
  plan.fits = plan.total_bytes <= plan.hbm_bytes_per_device
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  plan.xla_flops = float(cost.get('flops', 0.0))
  plan.bytes_accessed = float(cost.get('bytes accessed', 0.0))
  seconds = cost.get('optimal_seconds')
  plan.xla_seconds = float(seconds) if seconds is not None and seconds > 0 else None
  plan.collectives = collectives(compiled.as_text())


_OOM_RE = re.compile(r'Used ([\d.]+)([KMGT])? of [\d.]+[KMGT]? hbm')
_UNIT = {None: 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def _record_out_of_memory(plan: Plan, err: Exception, argument_bytes: int) -> None:
  """XLA refuses to compile a program over HBM; its message says how much it needed: all of it
  ('Used X of Y hbm') or the temporaries alone, to which the arguments are added here."""
  message = str(err)
  plan.fits = False
  plan.error = message.strip().splitlines()[0][:500] if message.strip() else type(err).__name__
  used = _OOM_RE.search(message)
  temporaries = re.search(r'HLO temporaries \(([\d.]+)([KMGT])?\)', message)
  if temporaries:
    plan.temp_bytes = int(float(temporaries.group(1)) * _UNIT[temporaries.group(2)])
    plan.argument_bytes = argument_bytes
    plan.total_bytes = plan.temp_bytes + argument_bytes
  elif used:
    plan.total_bytes = int(float(used.group(1)) * _UNIT[used.group(2)])


def _is_out_of_memory(err: Exception) -> bool:
  text = str(err)
  return 'RESOURCE_EXHAUSTED' in text or 'Ran out of memory' in text or 'exceeds available HBM' in text


def _compile(plan: Plan, lowered_fn, argument_bytes: int) -> Plan:
  start = time.perf_counter()
  try:
    compiled = lowered_fn().compile()
  except Exception as err:  # pylint: disable=broad-except  (XLA raises XlaRuntimeError / ValueError)
    if not _is_out_of_memory(err):
      raise
    _record_out_of_memory(plan, err, argument_bytes)
  else:
    _fill_from_compiled(plan, compiled)
  plan.compile_seconds = time.perf_counter() - start
  return plan


def plan_train(trainer, task_feature_lengths: Mapping[str, int], hbm_bytes_per_device: int,
               pack: bool = True) -> Plan:
  """Compiles `trainer`'s train step (the function train() runs) for its partitioner's devices."""
  partitioner = trainer.partitioner
  spec = train_batch_spec(trainer.model, task_feature_lengths, pack)
  batch = {name: jax.ShapeDtypeStruct((trainer.batch_size, length), dtype, sharding=partitioner.data_sharding)
           for name, (length, dtype) in spec.items()}
  state = _abstract(trainer.abstract_state, trainer.state_shardings)
  frozen = _abstract(trainer.frozen_layout.abstract, trainer.frozen_layout.shardings)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partitioner.replicated)
  state_bytes = {'params': bytes_per_device(trainer.abstract_state.params, trainer.state_shardings.params),
                 'opt_state': bytes_per_device(trainer.abstract_state.opt_state, trainer.state_shardings.opt_state)}
  if trainer.is_peft:
    state_bytes['frozen_params'] = bytes_per_device(trainer.frozen_layout.abstract, trainer.frozen_layout.shardings)
  inputs, targets = spec['encoder_input_tokens'][0], spec['decoder_target_tokens'][0]
  config = trainer.model.config
  plan = Plan(job='train', mesh=dict(partitioner.mesh.shape), batch_size=trainer.batch_size,
              lengths={'inputs': inputs, 'targets': targets}, tokens_per_step=trainer.batch_size * (inputs + targets),
              fits=False, hbm_bytes_per_device=hbm_bytes_per_device, state_bytes=state_bytes,
              model_flops=t5_train_flops(config, trainer.batch_size, inputs, targets),
              settings={'num_microbatches': trainer.num_microbatches, 'dtype': str(config.dtype),
                        'scan_layers': config.scan_layers, 'remat_policy': config.remat_policy, 'pack': pack})
  batch_bytes = bytes_per_device(batch, [leaf.sharding for leaf in batch.values()])
  return _compile(plan, lambda: trainer._train_step.lower(state, frozen, batch, rng),  # pylint: disable=protected-access
                  sum(state_bytes.values()) + batch_bytes)


def plan_decode(model: models.EncoderDecoderModel, partitioner, decoding_config, batch_size: int,
                input_length: int, max_decode_length: int, hbm_bytes_per_device: int) -> Plan:
  """Compiles the evaluation / inference decode (InferenceRunner's) for one batch."""
  runner = inference.InferenceRunner(model, partitioner, decoding_config)
  padded = inference.round_up(batch_size, partitioner.data_parallel_size)
  layout = train_state.param_layout(model, partitioner)
  params = _abstract(layout.abstract, layout.shardings)
  tokens = jax.ShapeDtypeStruct((padded, input_length), jnp.int32, sharding=partitioner.data_sharding)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partitioner.replicated)
  num_decodes = decoding_config.num_decodes
  encoder_flops, step_flops = t5_decode_flops(model.config, padded, input_length, max_decode_length, num_decodes)
  params_bytes = bytes_per_device(layout.abstract, layout.shardings)
  cache_bytes = decode_cache_bytes(model.config, padded // partitioner.data_parallel_size, input_length,
                                   max_decode_length, num_decodes, partitioner.mesh.shape['model'])
  plan = Plan(job='decode', mesh=dict(partitioner.mesh.shape), batch_size=padded,
              lengths={'inputs': input_length, 'targets': max_decode_length},
              tokens_per_step=padded * max_decode_length * num_decodes, fits=False,
              hbm_bytes_per_device=hbm_bytes_per_device, state_bytes={'params': params_bytes},
              model_flops=encoder_flops + max_decode_length * step_flops,
              settings={'method': decoding_config.method, 'num_decodes': num_decodes,
                        'dtype': str(model.config.dtype), 'encoder_flops': encoder_flops,
                        'decoder_step_flops': step_flops,
                        # What one decoder step reads on a device at most: every parameter and the
                        # full cache.
                        'decoder_step_bytes_per_device': params_bytes + cache_bytes})
  predict = runner._predict_fn(int(max_decode_length))  # pylint: disable=protected-access
  return _compile(plan, lambda: predict.lower(params, tokens, rng),
                  plan.state_bytes['params'] + bytes_per_device(tokens, tokens.sharding))


def sweep_train(configured: Plan, compile_with, num_devices: int, step_seconds, report=lambda plan: None,
                max_partitions: int = 16, slower_by: float = 1.25) -> list[Plan]:
  """Compiles num_partitions (powers of two) x num_microbatches and returns every plan compiled.

  For each width the microbatch count starts where the last out-of-memory figures say the
  temporaries fit and doubles until the step fits; widths stop once a fitting one is
  `slower_by` slower than the fastest so far by `step_seconds(plan)` (wider meshes only add
  collectives from there).
  """
  plans, best = [], None
  batch = configured.batch_size
  for parts in [2**i for i in range(int(math.log2(max_partitions)) + 1)]:
    if parts > num_devices or num_devices % parts:
      break
    data = num_devices // parts
    microbatches, fitted = 1, None
    while batch % microbatches == 0 and (batch // microbatches) % data == 0:
      same = (parts == configured.mesh.get('model', 1) and
              microbatches == configured.settings.get('num_microbatches', 1))
      try:
        plan = configured if same else compile_with(parts, microbatches)
      except ValueError:  # the model's dims do not split this many ways (heads, mlp, vocab)
        break
      if not same:
        plans.append(plan)
        report(plan)
      if plan.fits:
        fitted = plan
        break
      if plan.temp_bytes == 0:
        break  # state alone is too big at this width
      room = 0.9 * plan.hbm_bytes_per_device - (plan.total_bytes - plan.temp_bytes)
      if room <= 0:
        break
      needed = 2 ** math.ceil(math.log2(max(plan.temp_bytes / room, 2)))
      microbatches *= needed
    if fitted is not None:
      seconds = step_seconds(fitted)
      if best is not None and seconds > slower_by * best:
        break
      best = seconds if best is None else min(best, seconds)
  return plans

"""LoRA: low-rank adapters on chosen Dense kernels (Hu et al. 2021; as Hugging Face peft does it).

A targeted kernel W `(in, out)` gets `lora_a` `(in, r)` and `lora_b` `(r, out)` beside it in the
same Dense module, and computes  y = x W + (dropout(x) lora_a) lora_b * alpha / r.  lora_a starts
as peft's default (Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), lora_b at zero,
so at step 0 the model is exactly the base model. The adapters carry the kernel's logical axis names
(plus 'lora_rank', replicated), so lora_b of a query kernel shards over 'model' like the kernel.

Kernels are chosen by regular expressions fully matching the Dense module's path joined with '/',
e.g. 'encoder/layers_3/attention/query' (unscanned) or 'decoder/layers/self_attention/value'
(scanned: one choice for all layers). The default targets peft's T5 default, q and v of every
attention (self- and cross-attention).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

QV_TARGETS = ('.*attention/(query|value)',)
ATTENTION_TARGETS = ('.*attention/(query|key|value|out)',)
ALL_TARGETS = ('.*attention/(query|key|value|out)', '.*mlp/(wi|wi_0|wi_1|wo)')
TARGET_PRESETS = {'qv': QV_TARGETS, 'attention': ATTENTION_TARGETS, 'all': ALL_TARGETS}
ADAPTER_NAMES = ('lora_a', 'lora_b')
RANK_AXIS = 'lora_rank'


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank r, alpha (scale alpha / r), dropout on the adapter's input, and which kernels.

  `targets`: a preset name ('qv', 'attention', 'all') or regular expressions over module paths.
  """
  rank: int = 8
  alpha: float = 16.0
  dropout_rate: float = 0.0
  targets: Any = 'qv'

  def __post_init__(self):
    targets = self.targets
    if isinstance(targets, str):
      if targets not in TARGET_PRESETS:
        raise ValueError(f'LoraConfig.targets={targets!r}: expected one of {sorted(TARGET_PRESETS)} '
                         'or a list of regular expressions over module paths')
      targets = TARGET_PRESETS[targets]
    targets = tuple(targets)
    if not targets:
      raise ValueError('LoraConfig.targets is empty: LoRA needs at least one kernel to adapt')
    for pattern in targets:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ValueError(f'LoraConfig.targets: {pattern!r} is not a regular expression ({e})') from None
    object.__setattr__(self, 'targets', targets)
    if self.rank < 1:
      raise ValueError(f'LoraConfig.rank must be at least 1, got {self.rank}')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'LoraConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}')

  @property
  def scale(self) -> float:
    return float(self.alpha) / float(self.rank)

  def applies_to(self, module_path: Sequence[str]) -> bool:
    joined = '/'.join(str(p) for p in module_path)
    return any(re.fullmatch(pattern, joined) for pattern in self.targets)

  def to_json(self) -> dict:
    return {'rank': self.rank, 'alpha': float(self.alpha), 'dropout_rate': self.dropout_rate,
            'targets': list(self.targets)}


def lora_a_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """peft's kaiming_uniform_(a=sqrt(5)) on the (r, in) weight: U(-1/sqrt(in), 1/sqrt(in)).

  Our lora_a is (in, r) (or (layers, in, r) under scan, where fan-in is still shape[-2]).
  """
  bound = 1.0 / np.sqrt(shape[-2])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def delta(lora_a_IxR: jax.Array, lora_b_RxO: jax.Array, scale: float) -> jax.Array:
  """The kernel update scale * A B; leading (scanned 'layers') dimensions batch."""
  return jnp.einsum('...ir,...ro->...io', lora_a_IxR, lora_b_RxO,
                    precision=jax.lax.Precision.HIGHEST) * scale


def adapted_modules(params: PyTree) -> list[tuple[str, ...]]:
  """Paths of the Dense modules holding lora_a/lora_b in a parameter tree."""
  found = []

  def visit(node, path):
    if isinstance(node, dict):
      if 'lora_a' in node and 'lora_b' in node:
        found.append(path)
      for key, child in node.items():
        visit(child, path + (key,))
  visit(params, ())
  return sorted(found)


def merge(params: PyTree, config: LoraConfig) -> PyTree:
  """Base-model parameters with every adapter folded into its kernel (lora_a/lora_b removed)."""
  def walk(node):
    if not isinstance(node, dict):
      return node
    if 'lora_a' in node and 'lora_b' in node:
      rest = {k: v for k, v in node.items() if k not in ADAPTER_NAMES}
      kernel = np.asarray(rest['kernel'], np.float32)
      rest['kernel'] = (kernel + np.asarray(delta(jnp.asarray(node['lora_a'], jnp.float32),
                                                  jnp.asarray(node['lora_b'], jnp.float32),
                                                  config.scale))).astype(np.asarray(rest['kernel']).dtype)
      return rest
    return {k: walk(v) for k, v in node.items()}
  if not adapted_modules(params):
    raise ValueError('merge: the parameters hold no LoRA adapters (lora_a/lora_b)')
  return walk(params)

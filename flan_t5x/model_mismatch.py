"""A checkpoint of another model configuration: a configuration error, never "damage".

The saved parameter tree (names and shapes, from orbax's metadata) is compared with the
model's, in both directions: a parameter the model lacks (a checkpoint with more decoder
layers restored into fewer) would otherwise be dropped silently by a partial restore, and a
parameter the checkpoint lacks makes orbax fail with "tree structures do not match", which
reads like a damaged file. The error names the differing tensors and the gin setting that
most likely differs (layer counts are counted on both sides).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

Shapes = Mapping[str, tuple[int, ...]]  # 'decoder/layers_0/mlp/wo/kernel' -> shape

_LAYER = re.compile(r'^(encoder|decoder)/layers_(\d+)/')
_CONFIG = 'network.T5Config'


class ModelMismatchError(ValueError):
  """The checkpoint was saved by a model of another configuration (names the tensors and settings)."""


class OptimizerMismatchError(ModelMismatchError):
  """The checkpoint was saved with another optimizer: a configuration change, never damage."""


def _whole_layers(names: set[str], other: Shapes) -> dict[str, int]:
  """{'decoder/layers_1/': tensor count} of the layers in `names` of which `other` has no tensor."""
  layers: dict[str, int] = {}
  for name in names:
    match = _LAYER.match(name)
    if match and not any(o.startswith(match.group(0)) for o in other):
      layers[match.group(0)] = layers.get(match.group(0), 0) + 1
  return layers


def _one_side(names: set[str], other: Shapes, where: str) -> list[str]:
  layers = _whole_layers(names, other)
  found = [f'params/{prefix}* ({count} tensors) {where}' for prefix, count in sorted(layers.items())]
  return found + [f'params/{name} {where}' for name in sorted(names)
                  if not (_LAYER.match(name) and _LAYER.match(name).group(0) in layers)]


def differences(saved: Shapes, wanted: Shapes) -> list[str]:
  """Every parameter (or whole layer) missing on one side, then every one with another shape."""
  found = _one_side(set(wanted) - set(saved), saved, 'is not in the checkpoint')
  found += _one_side(set(saved) - set(wanted), wanted, 'is in the checkpoint but not in this model')
  found += [f'params/{name} has shape {tuple(saved[name])} in the checkpoint, {tuple(wanted[name])} in this model'
            for name in sorted(set(saved) & set(wanted)) if tuple(saved[name]) != tuple(wanted[name])]
  return found


def _layer_count(shapes: Shapes, stack: str) -> int:
  return len({m.group(2) for name in shapes if (m := _LAYER.match(name)) and m.group(1) == stack})


def _setting_of(name: str, saved_shape, wanted_shape) -> str:
  """The T5Config field that decides this parameter's presence or shape."""
  if 'lora' in name or 'prompt' in name:
    return 'the LoRA / prompt-tuning gin file (network.T5Config.lora / prompt_tuning)'
  if name.startswith('decoder/logits_dense'):
    return f'{_CONFIG}.logits_via_embedding' if saved_shape is None or wanted_shape is None else (
        f'{_CONFIG}.vocab_size' if saved_shape[-1] != wanted_shape[-1] else f'{_CONFIG}.emb_dim')
  if re.search(r'/layers/', name):
    return f'{_CONFIG}.scan_layers'
  if saved_shape is None or wanted_shape is None:
    if '/mlp/wi' in name:
      return f'{_CONFIG}.mlp_activations'
    return f'{_CONFIG}.scan_layers'
  if name == 'token_embedder/embedding' and saved_shape[0] != wanted_shape[0]:
    return f'{_CONFIG}.vocab_size'
  if '/mlp/' in name and (saved_shape[-1] != wanted_shape[-1] if '/wi' in name else saved_shape[0] != wanted_shape[0]):
    return f'{_CONFIG}.mlp_dim'
  if 'relpos_bias' in name:
    return f'{_CONFIG}.num_heads'
  if re.search(r'attention/(query|key|value|out)/', name):
    inner_axis = 0 if '/out/' in name else -1
    if saved_shape[inner_axis] != wanted_shape[inner_axis]:
      return f'{_CONFIG}.num_heads / head_dim'
  return f'{_CONFIG}.emb_dim'


def likely_settings(saved: Shapes, wanted: Shapes) -> list[str]:
  """The gin settings that likely differ, each once, layer counts with both values."""
  settings: list[str] = []

  def add(setting: str) -> None:
    if setting not in settings:
      settings.append(setting)
  for stack in ('encoder', 'decoder'):
    in_saved, in_model = _layer_count(saved, stack), _layer_count(wanted, stack)
    if in_saved != in_model:
      add(f'{_CONFIG}.num_{stack}_layers (the checkpoint has {in_saved} {stack} layers, this model {in_model})')
  whole = set(_whole_layers(set(saved) - set(wanted), wanted)) | set(_whole_layers(set(wanted) - set(saved), saved))
  for name in sorted(set(saved) | set(wanted)):
    if _LAYER.match(name) and _LAYER.match(name).group(0) in whole:
      continue  # a whole layer on one side only: the layer count above
    saved_shape, wanted_shape = saved.get(name), wanted.get(name)
    if saved_shape is not None and wanted_shape is not None and tuple(saved_shape) == tuple(wanted_shape):
      continue
    add(_setting_of(name, saved_shape, wanted_shape))
  return settings


def _shown(items: Iterable[str], limit: int = 4) -> str:
  items = list(items)
  return '; '.join(items[:limit]) + (f'; and {len(items) - limit} more' if len(items) > limit else '')


def check(step_dir: str, saved: Shapes, wanted: Shapes) -> None:
  """Raises ModelMismatchError when the saved parameters are not exactly this model's."""
  found = differences(saved, wanted)
  if not found:
    return
  settings = likely_settings(saved, wanted)
  raise ModelMismatchError(
      f'{step_dir} was saved by a model of another size or structure (a configuration mismatch, not a '
      f'damaged checkpoint): {_shown(found)}. The gin setting that likely differs: {_shown(settings, 3)}. '
      'Use the model gin file that trained it, or a new MODEL_DIR (with INITIAL_CHECKPOINT_PATH to start '
      'from other weights).')

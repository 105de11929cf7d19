"""LoRA adapters <-> Hugging Face peft's format (adapter_config.json + adapter_model.safetensors).

peft names a T5 adapter after the transformers module it wraps, with the adapter name left out
on save: `base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight` `(r, in)` and
`...q.lora_B.weight` `(out, r)`; torch Linear weights are `(out, in)`, so lora_A = our lora_a
transposed and lora_B = our lora_b transposed. The scale is lora_alpha / r (use_rslora false).
Module names follow flan_t5x.hf_format.name_map (q/k/v/o, DenseReluDense.wi_0/wi_1/wo).
No torch is needed here: safetensors and JSON only (peft itself runs in flan_t5x.hf_peer).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from flan_t5x import hf_format
from flan_t5x import lora as lora_lib
from flan_t5x import network

PyTree = Any
CONFIG_FILE = 'adapter_config.json'
WEIGHTS_FILE = 'adapter_model.safetensors'
PREFIX = 'base_model.model.'
# Our Dense module name -> transformers' T5 module name.
HF_MODULES = {'query': 'q', 'key': 'k', 'value': 'v', 'out': 'o', 'wi': 'wi', 'wi_0': 'wi_0',
              'wi_1': 'wi_1', 'wo': 'wo'}
_ATTENTION = ('query', 'key', 'value', 'out')
# peft options whose non-default values change the adapter's arithmetic; refused on import.
_UNSUPPORTED = {'use_rslora': False, 'use_dora': False, 'fan_in_fan_out': False, 'bias': 'none',
                'modules_to_save': None, 'rank_pattern': {}, 'alpha_pattern': {}, 'lora_bias': False,
                'layer_replication': None, 'trainable_token_indices': None, 'target_parameters': None}


def module_map(config: network.T5Config) -> list[tuple[str, tuple[str, ...]]]:
  """[(transformers module name, our Dense module path)] for every kernel LoRA may adapt."""
  if config.scan_layers:
    raise ValueError('peft export/import needs the unscanned layer layout (scan_layers = False)')
  out = []
  for name, path, _ in hf_format.name_map(config):
    if path[-1] == 'kernel' and path[-2] in HF_MODULES:
      out.append((name[:-len('.weight')], path[:-1]))
  return out


def _get(tree: dict, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def adapter_config(lora_cfg: lora_lib.LoraConfig, target_modules: list[str],
                   base_model_name_or_path: str | None) -> dict:
  return {
      'peft_type': 'LORA', 'task_type': 'SEQ_2_SEQ_LM', 'base_model_name_or_path': base_model_name_or_path,
      'r': lora_cfg.rank, 'lora_alpha': lora_cfg.alpha, 'lora_dropout': lora_cfg.dropout_rate,
      'target_modules': target_modules, 'bias': 'none', 'fan_in_fan_out': False, 'use_rslora': False,
      'use_dora': False, 'modules_to_save': None, 'init_lora_weights': True, 'inference_mode': True,
      'layers_to_transform': None, 'layers_pattern': None, 'rank_pattern': {}, 'alpha_pattern': {},
      'revision': None,
  }


def _target_modules(adapted: list[tuple[str, tuple]], all_modules: list[tuple[str, tuple]]) -> list[str]:
  """peft's short names (q, v, ...) when they select exactly the adapted modules, else full names."""
  short = sorted({path[-1] for _, path in adapted})
  selected = {hf for hf, path in all_modules if path[-1] in short}
  if selected == {hf for hf, _ in adapted}:
    return [HF_MODULES[name] for name in short]
  return sorted(hf for hf, _ in adapted)


def export(adapter_params: PyTree, lora_cfg: lora_lib.LoraConfig, config: network.T5Config, directory: str,
           base_model_name_or_path: str | None = None) -> dict:
  """Writes `directory` (atomically) for peft.PeftModel.from_pretrained; returns adapter_config."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  modules = module_map(config)
  adapted = [(hf, path) for hf, path in modules if _has_adapter(adapter_params, path)]
  found = lora_lib.adapted_modules(adapter_params)
  unmapped = sorted(set(found) - {path for _, path in adapted})
  if unmapped:
    raise ValueError(f'adapters on {["/".join(p) for p in unmapped]} have no transformers T5 module '
                     'that peft can wrap')
  if not adapted:
    raise ValueError('export-peft: the checkpoint holds no LoRA adapters')
  tensors = {}
  for hf, path in adapted:
    node = _get(adapter_params, path)
    tensors[f'{PREFIX}{hf}.lora_A.weight'] = np.ascontiguousarray(np.asarray(node['lora_a'], np.float32).T)
    tensors[f'{PREFIX}{hf}.lora_B.weight'] = np.ascontiguousarray(np.asarray(node['lora_b'], np.float32).T)
  cfg = adapter_config(lora_cfg, _target_modules(adapted, modules), base_model_name_or_path)
  with hf_format.new_directory_atomically(directory) as tmp:
    save_file(tensors, os.path.join(tmp, WEIGHTS_FILE), metadata={'format': 'pt'})
    with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
      json.dump(cfg, f, indent=2, sort_keys=True)
  return cfg


def _has_adapter(tree: dict, path: tuple) -> bool:
  try:
    node = _get(tree, path)
  except KeyError:
    return False
  return isinstance(node, dict) and 'lora_a' in node


def read_config(directory: str) -> dict:
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path) as f:
      cfg = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no adapter_config.json; not a peft adapter directory') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: invalid JSON ({e.msg})') from None
  if cfg.get('peft_type') != 'LORA':
    raise ValueError(f"{path}: peft_type {cfg.get('peft_type')!r}; only 'LORA' adapters can be imported")
  for key in ('r', 'lora_alpha', 'target_modules'):
    if key not in cfg:
      raise ValueError(f'{path}: field {key!r} is missing')
  for key, default in _UNSUPPORTED.items():
    value = cfg.get(key, default)
    if value not in (default, None) and not (default == {} and not value):
      raise ValueError(f'{path}: {key}={value!r} is not supported (expected {default!r})')
  return cfg


def _lora_targets(adapted_paths: list[tuple], all_modules: list[tuple[str, tuple]]) -> tuple[str, ...]:
  """Regular expressions selecting exactly `adapted_paths`: by module kind when that is exact."""
  kinds = sorted({p[-1] for p in adapted_paths})
  attention = [k for k in kinds if k in _ATTENTION]
  mlp = [k for k in kinds if k not in _ATTENTION]
  patterns = ([f'.*attention/({"|".join(attention)})'] if attention else []) + (
      [f'.*mlp/({"|".join(mlp)})'] if mlp else [])
  candidate = lora_lib.LoraConfig(rank=1, targets=patterns)
  if {p for _, p in all_modules if candidate.applies_to(p)} == set(adapted_paths):
    return tuple(patterns)
  return tuple(re.escape('/'.join(p)) for p in sorted(adapted_paths))


def load(directory: str, config: network.T5Config) -> tuple[PyTree, lora_lib.LoraConfig]:
  """(adapter parameter tree, LoraConfig) of a peft T5 LoRA adapter directory."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  cfg = read_config(directory)
  weights = os.path.join(directory, WEIGHTS_FILE)
  if not os.path.isfile(weights):
    raise FileNotFoundError(f'{weights}: missing (adapter_model.bin is not read; save with safetensors)')
  tensors = load_file(weights)
  rank = int(cfg['r'])
  modules = module_map(config)
  known = {}
  for hf, path in modules:
    known[f'{PREFIX}{hf}.lora_A.weight'] = (path, 'lora_a', (rank, _get_in_out(path, config)[0]))
    known[f'{PREFIX}{hf}.lora_B.weight'] = (path, 'lora_b', (_get_in_out(path, config)[1], rank))
  # Older peft versions kept the adapter name ('.lora_A.default.weight').
  tensors = {re.sub(r'\.(lora_[AB])\.default\.weight$', r'.\1.weight', k): v for k, v in tensors.items()}
  unexpected = sorted(set(tensors) - set(known))
  mismatched = [f'{k}: {tensors[k].shape} (expected {known[k][2]})' for k in sorted(set(tensors) & set(known))
                if tuple(tensors[k].shape) != known[k][2]]
  params, adapted = {}, set()
  for name, value in tensors.items():
    if name not in known or tuple(value.shape) != known[name][2]:
      continue
    path, leaf, _ = known[name]
    node = params
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = np.ascontiguousarray(np.asarray(value, np.float32).T)
    adapted.add(path)
  half = sorted('/'.join(p) for p in adapted if len(_get(params, p)) != 2)
  hf_format.raise_if_mismatched(f'{weights}: adapter does not match the model configuration', half,
                                unexpected, mismatched)
  if not adapted:
    raise ValueError(f'{weights}: no LoRA tensors found')
  lora_cfg = lora_lib.LoraConfig(rank=rank, alpha=float(cfg['lora_alpha']),
                                 dropout_rate=float(cfg.get('lora_dropout') or 0.0),
                                 targets=_lora_targets(sorted(adapted), modules))
  return params, lora_cfg


def _get_in_out(path: tuple, config: network.T5Config) -> tuple[int, int]:
  return hf_format.expected_shape(path + ('kernel',), config)

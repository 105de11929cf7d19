"""Parameter-efficient finetuning runs: the trainable/frozen split and adapter checkpoints.

A model whose T5Config has `lora` and/or `prompt_tuning` set is a PEFT model. Its parameter tree
is the base model's plus the adapters (`lora_a`/`lora_b` beside targeted kernels, `prompt/prompt`).
Training splits it: the TrainState (and so the optimizer state and every checkpoint) holds only
the adapters; the base parameters are a frozen input of the step, loaded from the base checkpoint.

Each checkpoint of a PEFT run records in its `run` item (`RunState.peft`) the adapter
configuration and the base checkpoint's fingerprint (checkpoint_import.checkpoint_fingerprint):
a resume reloads that base and refuses one whose fingerprint changed; `eval` and `infer` given the
adapter checkpoint as CHECKPOINT_PATH build the adapted model and load base + adapter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from flan_t5x import checkpoint_import
from flan_t5x import checkpoints
from flan_t5x import lora as lora_lib
from flan_t5x import prompt_tuning
from flan_t5x import train_state

PyTree = Any
PROMPT_MODULE = 'prompt'


def is_peft(config) -> bool:
  return config.lora is not None or config.prompt_tuning is not None


def is_adapter(path: tuple[str, ...]) -> bool:
  return path[-1] in lora_lib.ADAPTER_NAMES or path[0] == PROMPT_MODULE


def split(tree: PyTree) -> tuple[dict, dict]:
  """(adapters, base) of a nested-dict parameter tree (any leaves: arrays, specs, shardings)."""
  def walk(node, path):
    trainable, frozen = {}, {}
    for key, child in node.items():
      if isinstance(child, Mapping):
        t, f = walk(child, path + (key,))
        if t:
          trainable[key] = t
        if f:
          frozen[key] = f
      elif is_adapter(path + (key,)):
        trainable[key] = child
      else:
        frozen[key] = child
    return trainable, frozen
  return walk(tree, ())


def combine(adapters: PyTree, base: PyTree) -> PyTree:
  """The full parameter tree: base with the adapters added (inverse of `split`)."""
  if not adapters:
    return base
  if not base:
    return adapters
  out = dict(base)
  for key, child in adapters.items():
    out[key] = combine(child, base[key]) if isinstance(child, Mapping) and key in base else child
  return out


def split_layout(layout: train_state.ParamLayout) -> tuple[train_state.ParamLayout, train_state.ParamLayout]:
  """(trainable, frozen) layouts of a PEFT model: the adapters, and the base model."""
  parts = [split(tree) for tree in (layout.logical_specs, layout.shardings, layout.abstract)]
  return train_state.ParamLayout(*(p[0] for p in parts)), train_state.ParamLayout(*(p[1] for p in parts))


def count(tree: PyTree) -> int:
  return sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------ configuration record

def describe(config) -> dict:
  return {'lora': config.lora.to_json() if config.lora is not None else None,
          'prompt_tuning': config.prompt_tuning.to_json() if config.prompt_tuning is not None else None}


def configs_from_record(record: dict, source: str):
  """(LoraConfig | None, PromptTuningConfig | None) from a recorded `describe` dict."""
  try:
    lora_cfg = record.get('lora')
    pt_cfg = record.get('prompt_tuning')
    return (lora_lib.LoraConfig(**lora_cfg) if lora_cfg else None,
            prompt_tuning.PromptTuningConfig(**pt_cfg) if pt_cfg else None)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{source}: invalid adapter configuration {record!r} ({e})') from None


def record_for(config, base_fingerprint: dict) -> dict:
  """What a PEFT run stores in RunState.peft."""
  return {**describe(config), 'base': base_fingerprint}


def with_adapters(model, record: dict, source: str):
  """`model` with the adapter configuration of `record` (the same model if it already has it)."""
  lora_cfg, pt_cfg = configs_from_record(record, source)
  config = model.config
  if describe(config) == describe(dataclasses.replace(config, lora=lora_cfg, prompt_tuning=pt_cfg)):
    return model
  if is_peft(config):
    raise ValueError(f'{source}: the checkpoint holds adapters {describe_record(record)} but the model '
                     f'is configured with {describe(config)}; drop the PEFT gin file or make them agree')
  return model.with_config(dataclasses.replace(config, lora=lora_cfg, prompt_tuning=pt_cfg))


def describe_record(record: dict) -> str:
  parts = []
  if record.get('lora'):
    cfg = record['lora']
    parts.append(f"LoRA r={cfg['rank']} alpha={cfg['alpha']} targets={cfg['targets']}")
  if record.get('prompt_tuning'):
    parts.append(f"prompt of {record['prompt_tuning']['length']} vectors")
  return ', '.join(parts) or 'none'


# ------------------------------------------------------------------------ reading records

def _run_dir(path: str) -> str | None:
  if not os.path.isdir(path) and '://' not in path:
    return None
  try:
    state_dir = checkpoints.resolve_state_dir(path)
  except ValueError:
    return None
  run_dir = os.path.join(os.path.dirname(state_dir), 'run')
  return run_dir if os.path.isdir(run_dir) else None


def read_record(path: str) -> dict | None:
  """RunState.peft of a flan-t5x checkpoint (MODEL_DIR or checkpoint_<step>), None if not an adapter."""
  if checkpoint_import.detect_format(path) != 'flan_t5x':
    return None
  run_dir = _run_dir(path)
  if run_dir is None:
    return None
  run = checkpoints.read_run_json(run_dir)
  return run.get('peft') or None


def write_adapter_checkpoint(adapter_params: PyTree, record: dict, model_dir: str, step: int = 0) -> str:
  """MODEL_DIR/checkpoint_<step>/{state (params, step), run (seed, peft record)}: an adapter checkpoint
  that `eval`, `infer` and INITIAL_CHECKPOINT_PATH accept (e.g. an imported peft adapter)."""
  path = checkpoint_import.save_params_checkpoint(adapter_params, model_dir, step)
  checkpoints.write_run_json(os.path.join(path, 'run'),
                             dataclasses.asdict(checkpoints.RunState(seed=0, peft=record)))
  return path


def fingerprint(path: str) -> dict:
  """checkpoint_fingerprint of `path`; for an adapter checkpoint the sha256 also covers its base."""
  own = checkpoint_import.checkpoint_fingerprint(path)
  record = read_record(own['resolved'])
  if record is None:
    return own
  base = record['base']
  combined = hashlib.sha256(f"{own['sha256']}\0{base.get('sha256')}".encode()).hexdigest()
  return {**own, 'sha256': combined, 'adapter_sha256': own['sha256'], 'base': base}


# ----------------------------------------------------------------------------- loading

def check_base(record: dict, source: str) -> str:
  """The base checkpoint path recorded in `record`, after checking its fingerprint is unchanged."""
  base = record.get('base') or {}
  path = base.get('resolved') or base.get('path')
  if not path:
    raise ValueError(f'{source}: adapter checkpoint without a base checkpoint record')
  try:
    now = checkpoint_import.checkpoint_fingerprint(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{source}: its base checkpoint {path} is gone ({e})') from None
  if not checkpoint_import.same_checkpoint(now, base):
    raise ValueError(f'{source}: the base checkpoint changed since the adapters were trained: recorded '
                     f'{checkpoint_import.describe_checkpoint(base)}, found '
                     f'{checkpoint_import.describe_checkpoint(now)}')
  return path


def load_base(record: dict, abstract_base: PyTree, model_config, source: str) -> PyTree:
  path = check_base(record, source)
  params, _ = checkpoint_import.restore_params(path, abstract_base, model_config)
  logging.info('Loaded the base model of %s from %s.', source, path)
  return params


def load_adapters(path: str, abstract_adapters: PyTree) -> tuple[PyTree, int]:
  return checkpoints.read_params(path, abstract_adapters)


def summary_line(config, adapters: PyTree, base: PyTree) -> str:
  trainable, frozen = count(adapters), count(base)
  return (f'{describe_record(describe(config))}: {trainable:,} trainable parameters of '
          f'{trainable + frozen:,} ({100.0 * trainable / max(trainable + frozen, 1):.3f}%)')


# ------------------------------------------------------------------ a PEFT run's start

def _check_record_matches(config, record: dict, source: str) -> None:
  if describe(config) != {k: record.get(k) for k in ('lora', 'prompt_tuning')}:
    raise ValueError(f'{source}: its adapters ({describe_record(record)}) differ from the configured '
                     f'ones ({describe_record(describe(config))}); train a new MODEL_DIR or restore the '
                     'PEFT settings')


def attach_base(trainer, run_state: checkpoints.RunState, source: str) -> None:
  """After a resume: loads the base model recorded in the checkpoint (no-op for full finetuning)."""
  if not trainer.is_peft:
    if run_state.peft:
      raise ValueError(f'{source}: the checkpoint holds adapters ({describe_record(run_state.peft)}) but '
                       'the model has no LoRA / prompt tuning configured; add the PEFT gin file')
    return
  if not run_state.peft:
    raise ValueError(f'{source}: the checkpoint holds a full model but LoRA / prompt tuning is configured; '
                     'use a new MODEL_DIR with INITIAL_CHECKPOINT_PATH set to that checkpoint')
  _check_record_matches(trainer.model.config, run_state.peft, source)
  trainer.frozen_params = load_base(run_state.peft, trainer.frozen_layout.abstract, trainer.model.config,
                                    source)


def initial_state(trainer, initial_path: str, run_state: checkpoints.RunState):
  """A PEFT run's first state: base from INITIAL_CHECKPOINT_PATH and fresh adapters, or, when that
  path is itself an adapter checkpoint (an earlier run, an imported peft adapter), its base and
  adapters with a fresh optimizer state. Records the base in `run_state.peft`."""
  config = trainer.model.config
  record = read_record(initial_path)
  if record is not None:
    _check_record_matches(config, record, initial_path)
    base = load_base(record, trainer.frozen_layout.abstract, config, initial_path)
    adapter_params, step = load_adapters(initial_path, trainer.trainable_layout.abstract)
    run_state.peft = record
    return trainer.state_from_params(base, step, adapter_params)
  base_fingerprint = checkpoint_import.checkpoint_fingerprint(initial_path)
  base, step = checkpoint_import.restore_params(base_fingerprint['resolved'], trainer.frozen_layout.abstract,
                                                config)
  run_state.peft = record_for(config, base_fingerprint)
  return trainer.state_from_params(base, step)


def load_for_inference(model, partitioner, path: str):
  """(model, params on the mesh, step) of any checkpoint; an adapter checkpoint gives the adapted
  model and base + adapter parameters."""
  record = read_record(path)
  if record is None:
    layout = train_state.param_layout(model, partitioner)
    params, step = checkpoint_import.restore_params(path, layout.abstract, model.config)
    return model, params, step
  model = with_adapters(model, record, path)
  trainable, frozen = split_layout(train_state.param_layout(model, partitioner))
  base = load_base(record, frozen.abstract, model.config, path)
  adapter_params, step = load_adapters(path, trainable.abstract)
  return model, combine(adapter_params, base), step


def load_numpy(path: str, config) -> tuple[dict, PyTree, PyTree, int]:
  """(record, base params, adapter params, step) of an adapter checkpoint as host arrays (no mesh)."""
  record = read_record(path)
  if record is None:
    raise ValueError(f'{path}: not an adapter checkpoint (no LoRA / prompt-tuning record in its run item)')
  base_path = check_base(record, path)
  base = checkpoint_import.load_params(base_path, config)
  adapter_params, step = checkpoints.read_params(path)
  return record, base, adapter_params, step

"""Checkpoint conversion between Hugging Face T5 directories and flan-t5x (orbax) checkpoints.

  python -m flan_t5x.convert hf-to-t5x SRC_HF_DIR DST_MODEL_DIR [--dtype float32]
  python -m flan_t5x.convert t5x-to-hf SRC DST_HF_DIR --gin_file=gin/models/flan_t5_small.gin
                                       [--vocab PATH/spiece.model]
  python -m flan_t5x.convert t5x-classic-to-t5x SRC_T5X_CHECKPOINT DST_MODEL_DIR
                                       --gin_file=gin/models/flan_t5_small.gin
  python -m flan_t5x.convert merge-lora SRC_ADAPTER DST [--hf [--vocab PATH]] [--gin_file=...]
  python -m flan_t5x.convert export-peft SRC_ADAPTER DST_PEFT_DIR [--base_model_name_or_path NAME]
  python -m flan_t5x.convert import-peft SRC_PEFT_DIR DST_MODEL_DIR --base BASE_CHECKPOINT
  python -m flan_t5x.convert to-upstream-t5x SRC DST_MODEL_DIR --gin_file=gin/models/flan_t5_small.gin

`hf-to-t5x` writes DST_MODEL_DIR/checkpoint_0 usable as INITIAL_CHECKPOINT_PATH (an HF directory is
also accepted there directly). `t5x-to-hf` reads a flan-t5x MODEL_DIR / checkpoint_<step>, or a
classic T5X checkpoint, and needs the model's gin file for its configuration. `to-upstream-t5x` writes
SRC's parameters and step as DST_MODEL_DIR/checkpoint_<step> in upstream T5X's orbax layout (fresh
Adafactor statistics), which `python -m t5x.train|eval` take as INITIAL_CHECKPOINT_PATH / CHECKPOINT_PATH.

LoRA (flan_t5x.lora): SRC_ADAPTER is a LoRA run's MODEL_DIR or checkpoint_<step>; its base checkpoint
is the one it records (fingerprint checked). `merge-lora` folds the adapters into the base kernels
and writes a plain flan-t5x checkpoint (DST/checkpoint_<step>) or, with --hf, a Hugging Face
directory. `export-peft` writes adapter_config.json + adapter_model.safetensors, which
peft.PeftModel.from_pretrained loads on the base exported with t5x-to-hf. `import-peft` turns a peft
T5 LoRA adapter into an adapter checkpoint on BASE_CHECKPOINT (the checkpoint the adapter was
trained on, in any format), usable as CHECKPOINT_PATH by eval/infer or as INITIAL_CHECKPOINT_PATH to
continue training. The model configuration comes from --gin_file, or from a Hugging Face base's
config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np


def _model_config(gin_files, bindings):
  """The T5Config a model gin file (e.g. gin/models/flan_t5_small.gin) defines."""
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import gin_utils, network  # pylint: disable=g-import-not-at-top
  # Dropout does not change the parameters; model files leave DROPOUT_RATE to the run.
  gin_utils.parse_gin(gin_files, ['DROPOUT_RATE = 0.0'] + list(bindings), finalize=False)
  return gin.get_configurable(network.T5Config)()


PEFT_DIRECTIONS = ('merge-lora', 'export-peft', 'import-peft')


def _config_for(args, base_path: str):
  """The base model's T5Config: from --gin_file, else from a Hugging Face base's config.json."""
  from flan_t5x import hf_format  # pylint: disable=g-import-not-at-top
  if args.gin_file:
    return _model_config(args.gin_file, args.gin_bindings)
  if os.path.isdir(base_path) and hf_format.is_hf_checkpoint(base_path):
    return hf_format.config_from_hf(hf_format.read_config(base_path), dtype='float32')
  raise ValueError(f'{args.direction}: the base {base_path} is not a Hugging Face directory; give the '
                   "model's configuration with --gin_file=gin/models/<model>.gin")


def _peft_direction(args, parser):
  """merge-lora / export-peft / import-peft; returns (the parameters written, the summary)."""
  from flan_t5x import adapters, checkpoint_import, hf_format, lora, peft_format  # pylint: disable=g-import-not-at-top
  if args.direction == 'import-peft':
    if not args.base:
      parser.error('import-peft needs --base BASE_CHECKPOINT (the checkpoint the adapter was trained on)')
    config = _config_for(args, args.base)
    adapter_params, lora_cfg = peft_format.load(args.src, config)
    checkpoint_import.load_params(args.base, config)  # the base must fit the configuration
    record = adapters.record_for(dataclasses.replace(config, lora=lora_cfg, prompt_tuning=None),
                                 checkpoint_import.checkpoint_fingerprint(args.base))
    path = adapters.write_adapter_checkpoint(adapter_params, record, args.dst)
    return adapter_params, {'wrote': path, 'lora': lora_cfg.to_json(), 'base': record['base']['resolved']}
  record = adapters.read_record(args.src)
  if record is None:
    raise ValueError(f'{args.src}: not an adapter checkpoint (a LoRA run\'s MODEL_DIR or checkpoint_<step>)')
  base_path = adapters.check_base(record, args.src)
  config = _config_for(args, base_path)
  lora_cfg, prompt_cfg = adapters.configs_from_record(record, args.src)
  if lora_cfg is None or prompt_cfg is not None:
    raise ValueError(f'{args.src}: holds {adapters.describe_record(record)}; {args.direction} handles '
                     'LoRA adapters only (a learned prompt cannot be merged into the weights or exported to peft)')
  _, base, adapter_params, step = adapters.load_numpy(args.src, config)
  if args.direction == 'export-peft':
    cfg = peft_format.export(adapter_params, lora_cfg, config, args.dst,
                             args.base_model_name_or_path or base_path)
    return adapter_params, {'wrote': os.path.abspath(args.dst), 'target_modules': cfg['target_modules']}
  merged = lora.merge(adapters.combine(adapter_params, base), lora_cfg)
  if args.hf:
    hf_format.save(merged, config, args.dst, vocab_path=args.vocab, dtype=args.dtype)
    return merged, {'wrote': os.path.abspath(args.dst)}
  return merged, {'wrote': checkpoint_import.save_params_checkpoint(_astype(merged, args.dtype), args.dst, step)}


def _astype(tree, dtype):
  if isinstance(tree, dict):
    return {k: _astype(v, dtype) for k, v in tree.items()}
  return np.asarray(tree, dtype=dtype)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m flan_t5x.convert', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('direction', choices=('hf-to-t5x', 't5x-to-hf', 't5x-classic-to-t5x', 'merge-lora',
                                            'export-peft', 'import-peft', 'to-upstream-t5x'))
  parser.add_argument('src')
  parser.add_argument('dst')
  parser.add_argument('--gin_file', action='append', default=[],
                      help='model gin file(s) defining T5Config (t5x-to-hf, t5x-classic-to-t5x)')
  parser.add_argument('--gin', action='append', default=[], dest='gin_bindings')
  parser.add_argument('--dtype', default='float32', help='dtype of the written parameters')
  parser.add_argument('--vocab', default=None, help='spiece.model copied next to an exported HF model')
  parser.add_argument('--hf', action='store_true', help='merge-lora: write a Hugging Face directory')
  parser.add_argument('--base', default=None, help='import-peft: the base checkpoint of the adapter')
  parser.add_argument('--base_model_name_or_path', default=None,
                      help='export-peft: recorded in adapter_config.json (default: the base path)')
  args = parser.parse_args(argv)
  from flan_t5x import checkpoint_import, hf_format, runtime  # pylint: disable=g-import-not-at-top
  runtime.initialize()  # jax.distributed when started as one of several processes (environment)
  start = time.perf_counter()
  try:
    if args.direction in PEFT_DIRECTIONS:
      params, summary = _peft_direction(args, parser)
    elif args.direction == 'hf-to-t5x':
      params, config = hf_format.load(args.src, dtype=args.dtype)
      path = checkpoint_import.save_params_checkpoint(params, args.dst)
      summary = {'wrote': path, 'config': hf_format.hf_config_from(config)}
    else:
      if not args.gin_file:
        parser.error(f'{args.direction} needs --gin_file with the model configuration')
      config = _model_config(args.gin_file, args.gin_bindings)
      params, step, _ = checkpoint_import.load_params_and_step(args.src, config, dtype=args.dtype)
      if args.direction == 'to-upstream-t5x':
        import jax  # pylint: disable=g-import-not-at-top
        from flax import linen as nn  # pylint: disable=g-import-not-at-top
        from flan_t5x import models, train_state, upstream_t5x_export  # pylint: disable=g-import-not-at-top
        from flan_t5x import network as network_lib  # pylint: disable=g-import-not-at-top
        model = models.EncoderDecoderModel(network_lib.Transformer(config))
        boxed = jax.eval_shape(lambda r: model.init_params(r, *train_state._INIT_SHAPE), jax.random.PRNGKey(0))  # pylint: disable=protected-access
        summary = {'wrote': upstream_t5x_export.save(params, nn.get_partition_spec(boxed), step, args.dst),
                   'step': step}
      elif args.direction == 't5x-to-hf':
        hf_format.save(params, config, args.dst, vocab_path=args.vocab, dtype=args.dtype)
        summary = {'wrote': os.path.abspath(args.dst)}
      else:
        summary = {'wrote': checkpoint_import.save_params_checkpoint(params, args.dst)}
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  count = sum(int(np.prod(np.shape(x))) for x in checkpoint_import.leaves(params))
  summary.update(parameters=count, seconds=round(time.perf_counter() - start, 2))
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())

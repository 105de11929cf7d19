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
continue training.

The model configuration comes from --gin_file; without it, from the config.gin the run recorded in
its MODEL_DIR (SRC or the directory holding SRC), else from a Hugging Face base's config.json.
`python -m flan_t5x.convert <direction> --help` describes one direction.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
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
RUN_CONFIG = 'config.gin'  # what `flan_t5x.train` records in MODEL_DIR


def recorded_config_file(path: str) -> str | None:
  """MODEL_DIR/config.gin of a run's MODEL_DIR or of one of its checkpoint_<step> directories."""
  path = os.path.abspath(path.rstrip('/'))
  candidates = [os.path.join(path, RUN_CONFIG)]
  if re.fullmatch(r'checkpoint_\d+', os.path.basename(path)):
    candidates.append(os.path.join(os.path.dirname(path), RUN_CONFIG))
  return next((c for c in candidates if os.path.isfile(c)), None)


def _recorded_model_config(args, src: str):
  """The model configuration of --gin_file, else of the run's recorded config.gin (None: neither);
  adapters (LoRA, prompt) left out: the configuration is the base model's."""
  gin_files = list(args.gin_file)
  if not gin_files:
    recorded = recorded_config_file(src)
    if recorded is None:
      return None
    print(f'[flan_t5x] model configuration from {recorded} (the run\'s record; --gin_file overrides)',
          file=sys.stderr, flush=True)
    gin_files = [recorded]
  return dataclasses.replace(_model_config(gin_files, args.gin_bindings), lora=None, prompt_tuning=None)


def _config_for(args, base_path: str):
  """The base model's T5Config: --gin_file, the run's config.gin, else a Hugging Face base's config.json."""
  from flan_t5x import hf_format  # pylint: disable=g-import-not-at-top
  config = _recorded_model_config(args, args.src)
  if config is not None:
    return config
  if os.path.isdir(base_path) and hf_format.is_hf_checkpoint(base_path):
    return hf_format.config_from_hf(hf_format.read_config(base_path), dtype='float32')
  raise ValueError(f'{args.direction}: the base {base_path} is not a Hugging Face directory and {args.src} '
                   f"records no {RUN_CONFIG}; give the model's configuration with --gin_file=gin/models/<model>.gin")


def _model_files_that_fit(params) -> list[str]:
  """The model gin files of this repository (gin/models) whose parameter shapes `params` has."""
  import glob  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from flan_t5x import checkpoint_import, gin_utils  # pylint: disable=g-import-not-at-top
  fits = []
  for path in sorted(glob.glob(os.path.join(gin_utils.REPO_ROOT, 'gin', 'models', '*.gin'))):
    gin.clear_config()
    try:
      checkpoint_import.check_against_config(params, _model_config([path], []), path)
    except ValueError:
      continue
    fits.append(os.path.relpath(path, gin_utils.REPO_ROOT))
  gin.clear_config()
  return fits


def _check_model_file(params, config, args) -> None:
  """check_against_config, its error headed by the model gin files that do fit the checkpoint."""
  from flan_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top
  try:
    checkpoint_import.check_against_config(params, config, args.src)
  except ValueError as e:
    fits = _model_files_that_fit(params)
    given = ' '.join(f'--gin_file={f}' for f in args.gin_file) or f'the recorded {RUN_CONFIG}'
    recorded = recorded_config_file(args.src) if args.gin_file else None
    if fits:
      advice = f'its shapes fit {", ".join(fits)}: pass --gin_file={fits[0]}'
    elif recorded:
      advice = f'no file in gin/models fits its shapes; leave --gin_file out to use the run\'s {recorded}'
    else:
      advice = 'no file in gin/models fits its shapes: pass the model gin file it was trained with'
    hint = f'{given} does not describe {args.src}; {advice}'
    raise ValueError(f'{hint}.\n{e}') from None


def _peft_direction(args):
  """merge-lora / export-peft / import-peft; returns (the parameters written, the summary)."""
  from flan_t5x import adapters, checkpoint_import, hf_format, lora, peft_format  # pylint: disable=g-import-not-at-top
  if args.direction == 'import-peft':
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
    base_name = args.base_model_name_or_path or base_path
    if not args.base_model_name_or_path and not hf_format.is_hf_checkpoint(base_path):
      print(f'warning: adapter_config.json records base_model_name_or_path={base_path!r}, a '
            f'{checkpoint_import.detect_format(base_path)} checkpoint that transformers cannot load. Export '
            f'the base with `python -m flan_t5x.convert t5x-to-hf {base_path} BASE_HF_DIR` and pass '
            '--base_model_name_or_path BASE_HF_DIR (or a Hub name such as google/flan-t5-base).',
            file=sys.stderr, flush=True)
    cfg = peft_format.export(adapter_params, lora_cfg, config, args.dst, base_name)
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


_DIRECTIONS = {
    'hf-to-t5x': 'Hugging Face T5 directory -> DST/checkpoint_0 (a flan-t5x checkpoint).',
    't5x-to-hf': 'flan-t5x MODEL_DIR / checkpoint_<step> or T5X checkpoint -> Hugging Face directory.',
    't5x-classic-to-t5x': 'classic T5X checkpoint (msgpack + TensorStore) -> flan-t5x checkpoint.',
    'merge-lora': "LoRA run's MODEL_DIR / checkpoint -> base with the adapters folded in (--hf: HF dir).",
    'export-peft': "LoRA run's MODEL_DIR / checkpoint -> peft adapter (adapter_config.json + safetensors).",
    'import-peft': 'peft T5 LoRA adapter -> adapter checkpoint on --base.',
    'to-upstream-t5x': 'any checkpoint -> DST/checkpoint_<step> in upstream T5X\'s orbax layout (t5x.train continues it).',
}
_GIN_HELP = ("model gin file(s) defining T5Config, e.g. gin/models/flan_t5_base.gin (default: the run's "
             'recorded MODEL_DIR/config.gin; merge-lora / export-peft / import-peft: or an HF base\'s config.json)')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m flan_t5x.convert', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='direction', required=True, metavar='direction',
                              help=' | '.join(_DIRECTIONS))
  for name, summary in _DIRECTIONS.items():
    p = sub.add_parser(name, help=summary, description=summary, prog=f'python -m flan_t5x.convert {name}')
    p.add_argument('src', help='what to convert')
    p.add_argument('dst', help='where to write it (must not exist or be empty)')
    p.add_argument('--dtype', default='float32', help='dtype of the written parameters')
    if name != 'hf-to-t5x':
      p.add_argument('--gin_file', action='append', default=[], help=_GIN_HELP)
      p.add_argument('--gin', action='append', default=[], dest='gin_bindings', help='gin binding, e.g. X=1')
    if name in ('t5x-to-hf', 'merge-lora'):
      p.add_argument('--vocab', default=None, help='spiece.model copied next to an exported HF model')
    if name == 'merge-lora':
      p.add_argument('--hf', action='store_true', help='write a Hugging Face directory')
    if name == 'import-peft':
      p.add_argument('--base', default=None, required=True, help='the base checkpoint the adapter was trained on')
    if name == 'export-peft':
      p.add_argument('--base_model_name_or_path', default=None,
                     help='recorded in adapter_config.json (default: the base path; warned if not a HF directory)')
  return parser


def _full_direction(args):
  """hf-to-t5x, t5x-to-hf, t5x-classic-to-t5x, to-upstream-t5x: (the parameters written, the summary)."""
  from flan_t5x import checkpoint_import, hf_format  # pylint: disable=g-import-not-at-top
  if args.direction == 'hf-to-t5x':
    params, config = hf_format.load(args.src, dtype=args.dtype)
    path = checkpoint_import.save_params_checkpoint(params, args.dst)
    return params, {'wrote': path, 'config': hf_format.hf_config_from(config)}
  config = _recorded_model_config(args, args.src)
  if config is None:
    raise ValueError(f'{args.direction}: {args.src} records no {RUN_CONFIG}; give the model configuration '
                     'with --gin_file=gin/models/<model>.gin')
  params, step, _ = checkpoint_import.load_params_and_step(args.src, None, dtype=args.dtype)
  _check_model_file(params, config, args)
  if args.direction == 'to-upstream-t5x':
    from flan_t5x import upstream_t5x_export  # pylint: disable=g-import-not-at-top
    return params, {'wrote': upstream_t5x_export.save_for_config(params, config, step, args.dst), 'step': step}
  if args.direction == 't5x-to-hf':
    hf_format.save(params, config, args.dst, vocab_path=args.vocab, dtype=args.dtype)
    return params, {'wrote': os.path.abspath(args.dst)}
  return params, {'wrote': checkpoint_import.save_params_checkpoint(params, args.dst)}


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from flan_t5x import checkpoint_import, runtime  # pylint: disable=g-import-not-at-top
  runtime.initialize()  # jax.distributed when started as one of several processes (environment)
  start = time.perf_counter()
  try:
    if args.direction in PEFT_DIRECTIONS:
      params, summary = _peft_direction(args)
    else:
      params, summary = _full_direction(args)
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  count = sum(int(np.prod(np.shape(x))) for x in checkpoint_import.leaves(params))
  summary.update(parameters=count, seconds=round(time.perf_counter() - start, 2))
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())

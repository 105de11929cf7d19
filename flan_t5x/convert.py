"""Checkpoint conversion between Hugging Face T5 directories and flan-t5x (orbax) checkpoints.

  python -m flan_t5x.convert hf-to-t5x SRC_HF_DIR DST_MODEL_DIR [--dtype float32]
  python -m flan_t5x.convert t5x-to-hf SRC DST_HF_DIR --gin_file=gin/models/flan_t5_small.gin
                                       [--vocab PATH/spiece.model]
  python -m flan_t5x.convert t5x-classic-to-t5x SRC_T5X_CHECKPOINT DST_MODEL_DIR
                                       --gin_file=gin/models/flan_t5_small.gin

`hf-to-t5x` writes DST_MODEL_DIR/checkpoint_0 usable as INITIAL_CHECKPOINT_PATH (an HF directory is
also accepted there directly). `t5x-to-hf` reads a flan-t5x MODEL_DIR / checkpoint_<step>, or a
classic T5X checkpoint, and needs the model's gin file for its configuration.
"""
from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m flan_t5x.convert', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('direction', choices=('hf-to-t5x', 't5x-to-hf', 't5x-classic-to-t5x'))
  parser.add_argument('src')
  parser.add_argument('dst')
  parser.add_argument('--gin_file', action='append', default=[],
                      help='model gin file(s) defining T5Config (t5x-to-hf, t5x-classic-to-t5x)')
  parser.add_argument('--gin', action='append', default=[], dest='gin_bindings')
  parser.add_argument('--dtype', default='float32', help='dtype of the written parameters')
  parser.add_argument('--vocab', default=None, help='spiece.model copied next to an exported HF model')
  args = parser.parse_args(argv)
  from flan_t5x import checkpoint_import, hf_format, runtime  # pylint: disable=g-import-not-at-top
  runtime.initialize()  # jax.distributed when started as one of several processes (environment)
  start = time.perf_counter()
  try:
    if args.direction == 'hf-to-t5x':
      params, config = hf_format.load(args.src, dtype=args.dtype)
      path = checkpoint_import.save_params_checkpoint(params, args.dst)
      summary = {'wrote': path, 'config': hf_format.hf_config_from(config)}
    else:
      if not args.gin_file:
        parser.error(f'{args.direction} needs --gin_file with the model configuration')
      config = _model_config(args.gin_file, args.gin_bindings)
      params = checkpoint_import.load_params(args.src, config, dtype=args.dtype)
      if args.direction == 't5x-to-hf':
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

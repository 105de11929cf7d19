"""What `import __main__ as infer_script` names under `python -m flan_t5x.infer`: T5X's `infer`.

T5X's arguments mapped onto flan_t5x's resumable inference: `checkpoint_period` batches make one
chunk. flan_t5x also reads a JSONL file of raw inputs (`input_path`, with `dataset_cfg = None`).
"""

from __future__ import annotations

from flan_t5x import checkpoints
from flan_t5x import data
from flan_t5x import decoding
from flan_t5x import batch_inference as infer_lib
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import t5x_names
from flan_t5x.t5x_names import models as t5x_models


def infer(*, model: models.EncoderDecoderModel, output_dir: str,
          dataset_cfg: data.DatasetConfig | None,
          restore_checkpoint_cfg: checkpoints.RestoreCheckpointConfig,
          mode: str = 'predict', partitioner: partitioning.PjitPartitioner | None = None,
          checkpoint_period: int = 100, shard_id: int = 0, num_shards: int = 1,
          input_path: str | None = None, input_field: str = 'inputs', batch_size: int = 32,
          input_length: int | None = None, max_decode_length: int = 128,
          max_examples: int | None = None, chunk_size: int | None = None,
          decoding_config: decoding.DecodingConfig | None = None,
          on_mismatch: str = 'refuse', run_config: str | None = None) -> str | None:
  """T5X's infer entry point (mode 'predict'); returns this host's predictions file.

  A `dataset_cfg` naming no task (MIXTURE_OR_TASK_NAME = None) reads `input_path` instead.
  `chunk_size` (examples per resumable chunk) replaces `checkpoint_period` batches when given.
  """
  if mode != 'predict':
    raise ValueError(f"infer_script.infer.mode = {mode!r}: flan_t5x's infer supports 'predict' only "
                     "(log-likelihoods of given targets: flan_t5x.eval's rank classification).")
  if (shard_id, num_shards) != (0, 1):
    raise ValueError(f'infer_script.infer.shard_id/num_shards = {shard_id}/{num_shards}: flan_t5x shards '
                     'the inputs across the processes of the run itself; leave them at 0 and 1.')
  t5x_names.check_restore_for_reading(restore_checkpoint_cfg, 'infer')
  if checkpoint_period < 1:
    raise ValueError(f'infer_script.infer.checkpoint_period must be at least 1, got {checkpoint_period}.')
  task_name = split = module = None
  if dataset_cfg is not None and dataset_cfg.mixture_or_task_name is not None:
    data.check_decoding_dataset(dataset_cfg, 'utils.DatasetConfig')
    task_name, split, batch_size = dataset_cfg.mixture_or_task_name, dataset_cfg.split, dataset_cfg.batch_size
    module = dataset_cfg.module
    if module:
      data.import_task_module(dataset_cfg)
    lengths = dataset_cfg.task_feature_lengths or {}
    input_length = lengths.get('inputs', input_length)
    max_decode_length = lengths.get('targets', max_decode_length)
  return infer_lib.infer(
      model=model, checkpoint_path=restore_checkpoint_cfg.path, output_dir=output_dir, input_path=input_path,
      input_field=input_field, mixture_or_task_name=task_name, split=split or 'validation',
      max_examples=max_examples, chunk_size=chunk_size or checkpoint_period * batch_size, batch_size=batch_size,
      input_length=input_length, max_decode_length=max_decode_length,
      decoding_config=decoding_config or t5x_models.bound_decoding_config(model),
      partitioner=partitioner, on_mismatch=on_mismatch, run_config=run_config)

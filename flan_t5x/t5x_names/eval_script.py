"""What `import __main__ as eval_script` names under `python -m flan_t5x.eval`: T5X's `evaluate`.

T5X's arguments (a DatasetConfig and a RestoreCheckpointConfig) mapped onto flan_t5x's evaluation.
"""

from __future__ import annotations

from flan_t5x import checkpoints
from flan_t5x import data
from flan_t5x import decoding
from flan_t5x import evaluation
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import t5x_names
from flan_t5x.t5x_names import models as t5x_models


def evaluate(*, model: models.EncoderDecoderModel, dataset_cfg: data.DatasetConfig,
             restore_checkpoint_cfg: checkpoints.RestoreCheckpointConfig, output_dir: str,
             partitioner: partitioning.PjitPartitioner | None = None, max_examples: int | None = None,
             rank_classification: bool = True,
             decoding_config: decoding.DecodingConfig | None = None,
             inference_evaluator_cls: type | None = None) -> dict[str, dict]:
  """T5X's eval entry point: decodes `dataset_cfg`'s tasks with the checkpoint at its path, as T5X
  (the model's decode_fn) unless a flan_t5x `decoding_config` is given."""
  t5x_names.check_restore_for_reading(restore_checkpoint_cfg, 'eval')
  data.check_decoding_dataset(dataset_cfg, 'utils.DatasetConfig')
  t5x_names.check_evaluator_cls(inference_evaluator_cls, 'eval_script.evaluate')
  max_examples = t5x_names.examples_per_task(max_examples, 'EVAL_MAX_EXAMPLES')
  if not restore_checkpoint_cfg.path:
    raise ValueError('CHECKPOINT_PATH (utils.RestoreCheckpointConfig.path) is empty: give the checkpoint '
                     'to evaluate, e.g. --gin.CHECKPOINT_PATH="\'runs/demo\'".')
  return evaluation.evaluate_checkpoint(
      model=model, checkpoint_path=restore_checkpoint_cfg.path, output_dir=output_dir,
      mixture_or_task_name=dataset_cfg.mixture_or_task_name, split=dataset_cfg.split,
      task_feature_lengths=dataset_cfg.task_feature_lengths, batch_size=dataset_cfg.batch_size,
      max_examples=max_examples, rank_classification=rank_classification,
      decoding_config=decoding_config or t5x_models.bound_decoding_config(model),
      partitioner=partitioner, module=dataset_cfg.module,
      json_write_n_results=t5x_names.seqio_binding('seqio.JSONLogger', 'write_n_results'))

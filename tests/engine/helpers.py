"""Builders shared by engine tests (tiny fp32 model, tiny task, training runs)."""

from __future__ import annotations

import os

import jax

from flan_t5x import checkpoints
from flan_t5x import data
from flan_t5x import models
from flan_t5x import network
from flan_t5x import optimizers
from flan_t5x import partitioning
from flan_t5x import schedules
from flan_t5x import summaries
from flan_t5x import training as train_lib
from flan_t5x import trainer as trainer_lib

import tiny_task

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FEATURE_LENGTHS = {'inputs': 32, 'targets': 16}

# tiny_model() as a model gin file, for tests that run the command-line jobs on its checkpoints.
TINY_MODEL_GIN = """from __gin__ import dynamic_registration
import seqio
from flan_t5x import network
include 'gin/models/t5_1_1_tiny.gin'
VOCABULARY = @seqio.ByteVocabulary()
network.T5Config:
  vocab_size = 384
  dtype = 'float32'
  emb_dim = 32
  num_heads = 2
  head_dim = 16
  mlp_dim = 64
"""


def tiny_config(**overrides) -> network.T5Config:
  cfg = dict(vocab_size=tiny_task.MODEL_VOCAB_SIZE, emb_dim=32, num_heads=2, num_encoder_layers=2,
             num_decoder_layers=2, head_dim=16, mlp_dim=64, dropout_rate=0.0, dtype='float32')
  cfg.update(overrides)
  return network.T5Config(**cfg)


def tiny_model(optimizer=None, loss_normalizing_factor='NUM_REAL_TARGET_TOKENS', **config_overrides):
  return models.EncoderDecoderModel(
      network.Transformer(tiny_config(**config_overrides)), input_vocabulary=tiny_task.VOCAB,
      output_vocabulary=tiny_task.VOCAB, optimizer_def=optimizer or optimizers.Adafactor(),
      loss_normalizing_factor=loss_normalizing_factor)


def dataset_cfg(batch_size=8, split='train', task=None, lengths=None, seed=None, shuffle=True):
  return data.DatasetConfig(mixture_or_task_name=task or tiny_task.register(),
                            task_feature_lengths=lengths or FEATURE_LENGTHS, split=split,
                            batch_size=batch_size, shuffle=shuffle, seed=seed, pack=True)


def make_trainer(model=None, partitioner=None, batch_size=8, num_microbatches=None, lr=0.01, seed=0,
                 lengths=None):
  return trainer_lib.Trainer(
      model=model or tiny_model(), partitioner=partitioner or partitioning.PjitPartitioner(
          devices=jax.devices()[:1]),
      learning_rate_fn=schedules.create_learning_rate_scheduler(factors='constant', base_learning_rate=lr),
      batch_size=batch_size, task_feature_lengths=lengths or FEATURE_LENGTHS,
      num_microbatches=num_microbatches, seed=seed)


def run_training(model_dir, total_steps, model=None, batch_size=8, period=1, eval_period=None,
                 partitioner=None, initial_checkpoint=None, lr=0.01, task=None, lengths=None,
                 learning_rate_fn=None, **kwargs):
  learning_rate_fn = learning_rate_fn or schedules.create_learning_rate_scheduler(
      factors='constant', base_learning_rate=lr)

  def trainer_cls(**kw):
    return trainer_lib.Trainer(learning_rate_fn=learning_rate_fn, **kw)
  return train_lib.train(
      model=model or tiny_model(), model_dir=str(model_dir),
      train_dataset_cfg=dataset_cfg(batch_size, task=task, lengths=lengths),
      train_eval_dataset_cfg=dataset_cfg(batch_size, 'validation', task=task, lengths=lengths, seed=42,
                                         shuffle=False) if eval_period else None,
      checkpoint_cfg=checkpoints.CheckpointConfig(
          save=checkpoints.SaveCheckpointConfig(period=period, keep=kwargs.pop('keep', None),
                                                keep_best_metric=kwargs.pop('keep_best_metric', None),
                                                keep_best_mode=kwargs.pop('keep_best_mode', 'min')),
          restore=checkpoints.RestoreCheckpointConfig(path=initial_checkpoint)),
      partitioner=partitioner or partitioning.PjitPartitioner(devices=jax.devices()[:1]),
      trainer_cls=trainer_cls, total_steps=total_steps, eval_steps=2, eval_period=eval_period,
      random_seed=kwargs.pop('random_seed', 0),
      use_progress_bar=kwargs.pop('use_progress_bar', False), log_period=kwargs.pop('log_period', 1),
      **kwargs)


def event_losses(model_dir) -> dict[int, float]:
  """{step: loss} from the TensorBoard events in MODEL_DIR/train; a step logged twice keeps its last value."""
  return summaries.read_scalars(os.path.join(str(model_dir), 'train'), 'loss')

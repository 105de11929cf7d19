"""SeqIO input pipeline: packed, shuffled, deterministic by seed, sharded per host."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Iterator, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """Which SeqIO task/mixture to read and how (field names as T5X's utils.DatasetConfig)."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool
  seed: int | None = None
  use_cached: bool = False
  pack: bool = False
  module: str | None = None


def import_task_module(config: DatasetConfig) -> None:
  """Registers tasks from `config.module` (T5X's MIXTURE_OR_TASK_MODULE), if given."""
  if config.module:
    importlib.import_module(config.module)


def has_split(config: DatasetConfig) -> bool:
  import_task_module(config)
  return config.split in seqio.get_mixture_or_task(config.mixture_or_task_name).splits


def get_dataset(config: DatasetConfig, feature_converter: seqio.FeatureConverter, seed: int,
                num_epochs: int | None, skip_batches: int = 0) -> tf.data.Dataset:
  """This host's batches of the global batch (`batch_size / process_count` rows each).

  The order is a pure function of `seed`, so `skip_batches` reproduces the
  position of an interrupted run exactly.
  """
  import_task_module(config)
  num_hosts = jax.process_count()
  if config.batch_size % num_hosts:
    raise ValueError(f'Batch size {config.batch_size} is not divisible by {num_hosts} hosts.')
  dataset = seqio.get_dataset(
      config.mixture_or_task_name, task_feature_lengths=dict(config.task_feature_lengths),
      feature_converter=feature_converter, dataset_split=config.split, use_cached=config.use_cached,
      shuffle=config.shuffle, num_epochs=num_epochs,
      shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=num_hosts),
      verbose=False, seed=config.seed if config.seed is not None else seed)
  dataset = dataset.batch(config.batch_size // num_hosts, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  dataset = dataset.with_options(options)
  return dataset.skip(skip_batches) if skip_batches else dataset


def numpy_batches(dataset: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  for batch in dataset.as_numpy_iterator():
    yield {name: np.asarray(value) for name, value in batch.items()}

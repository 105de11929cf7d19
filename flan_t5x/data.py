"""SeqIO input pipeline: packed, shuffled, deterministic by seed, sharded per host, resumable.

Resuming puts the input where the killed run left it in constant time: the state of each
host's tf.data iterator (shuffle buffers, mixture sampler, packing buffers, positions) is saved
with every checkpoint, as T5X's `save_dataset`, and restored into a fresh pipeline. This works
for any SeqIO task built from checkpointable tf.data ops, user tasks included, which an
index-based sampler would not (a SeqIO mixture samples its tasks inside tf.data). A pipeline
that cannot be saved (e.g. a `tf.py_function` in a preprocessor), or a checkpoint written by a
different number of hosts, falls back to replaying the consumed batches, with a warning that
says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import tempfile
import time
from typing import Mapping

from absl import logging

import jax
import numpy as np
import seqio
import tensorflow as tf

from flan_t5x import config_checks


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """Which SeqIO task/mixture to read and how (field names as T5X's utils.DatasetConfig)."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int] | None  # None: each task's full lengths (evaluation only)
  split: str
  batch_size: int
  shuffle: bool
  seed: int | None = None
  use_cached: bool = False
  pack: bool = False
  module: str | None = None
  # T5X's fields. use_memory_cache: T5X's in-memory cache of small evaluation sets, a speed option
  # (flan_t5x's evaluator holds its examples in memory anyway); the others at T5X's defaults only.
  use_memory_cache: bool = True
  trim_output_features: bool = True
  use_custom_packing_ops: bool = False

  def __post_init__(self):
    config_checks.raise_refused(self)

  @staticmethod
  def refusal(field: str, value) -> str | None:
    """Why flan_t5x refuses this T5X field value (None: honoured); checked when gin parses too."""
    if field == 'trim_output_features' and value is not True:
      return ('utils.DatasetConfig.trim_output_features = False: flan_t5x always trims features to '
              'task_feature_lengths (T5X\'s default); remove the binding.')
    if field == 'use_custom_packing_ops' and value is not False:
      return ("utils.DatasetConfig.use_custom_packing_ops = True: flan_t5x packs with SeqIO's TF ops (T5X's "
              'default); remove the binding.')
    return None


def check_decoding_dataset(config: DatasetConfig, where: str) -> None:
  """Evaluation and inference decode unpacked, uncached examples in order: other settings are refused."""
  if config.pack:
    raise ValueError(f'{where}.pack = True: flan_t5x decodes unpacked examples; set it to False.')
  if config.shuffle:
    raise ValueError(f'{where}.shuffle = True: flan_t5x evaluates examples in order; set it to False.')
  if config.use_cached:
    raise ValueError(f'{where}.use_cached = True: flan_t5x evaluates tasks uncached; set it to False.')


def import_task_module(config: DatasetConfig) -> None:
  """Registers tasks from `config.module` (T5X's MIXTURE_OR_TASK_MODULE), if given."""
  if config.module:
    importlib.import_module(config.module)


def has_split(config: DatasetConfig) -> bool:
  import_task_module(config)
  return config.split in seqio.get_mixture_or_task(config.mixture_or_task_name).splits


def check_local_files(config: DatasetConfig) -> None:
  """Reads every local data file of the tasks `config` trains on (its split), so that a bad row or a
  missing column is a one-line BadRowError naming the file and line before any work. The rows are
  kept (flan_tasks' sources cache them), so the input pipeline does not read them again."""
  import_task_module(config)
  provider = seqio.get_mixture_or_task(config.mixture_or_task_name)
  # flan mixtures also list members whose data is missing (`tasks` leaves them out)
  members = getattr(provider, 'listed_tasks', None) or [provider]
  tasks = [t for member in members for t in seqio.get_subtasks(member)]
  for task in tasks:
    source = task.source
    if hasattr(source, 'local_paths') and source.local_paths(config.split) is not None:
      source.load_columns(config.split)


def get_dataset(config: DatasetConfig, feature_converter: seqio.FeatureConverter, seed: int,
                num_epochs: int | None, shard: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  """This host's batches of the global batch (`batch_size / process_count` rows each).

  Host i reads shard i of `process_count` (or `shard`, to build another host's batches). The
  order is a pure function of `seed` and the shard.
  """
  import_task_module(config)
  shard = shard or seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
  num_hosts = shard.num_shards
  if config.batch_size % num_hosts:
    raise ValueError(f'Batch size {config.batch_size} is not divisible by {num_hosts} hosts.')
  lengths = dict(config.task_feature_lengths)
  # No in-memory cache of small tasks: sources hold their rows already, and a cache would be
  # copied into every checkpoint of the input iterator.
  dataset = seqio.get_mixture_or_task(config.mixture_or_task_name).get_dataset(
      lengths, split=config.split, use_cached=config.use_cached, shuffle=config.shuffle,
      num_epochs=num_epochs, shard_info=shard,
      seed=config.seed if config.seed is not None else seed, try_in_mem_cache=False)
  dataset = feature_converter(dataset, task_feature_lengths=lengths)
  dataset = dataset.batch(config.batch_size // num_hosts, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  if jax.default_backend() == 'cpu':
    # The XLA step already uses every core of a CPU-only host; one input thread keeps tf.data's
    # pools from preempting it (bench/loop_overhead.py). Accelerator hosts keep tf.data's defaults.
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options).prefetch(2)


class InputIterator:
  """This host's training batches as numpy, with a saveable position.

  `state()` returns the iterator's checkpoint as {file name: bytes} (None when the pipeline
  cannot be saved); `restore(state)` continues from it.
  """

  def __init__(self, dataset: tf.data.Dataset):
    self._dataset = dataset
    self._iterator = iter(dataset)
    self._saveable = True

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in next(self._iterator).items()}

  def state(self) -> dict[str, bytes] | None:
    if not self._saveable:
      return None
    with tempfile.TemporaryDirectory() as tmp:
      try:
        tf.train.Checkpoint(iterator=self._iterator).write(os.path.join(tmp, 'input'))
      except (tf.errors.OpError, ValueError, TypeError) as err:
        self._saveable = False
        logging.warning('The input pipeline cannot be saved (%s); a resumed run will replay the '
                        'consumed batches instead, which takes time proportional to the step.', err)
        return None
      return {name: _read_bytes(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))}

  def restore(self, state: Mapping[str, bytes]) -> None:
    tick = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
      for name, payload in state.items():
        with open(os.path.join(tmp, name), 'wb') as f:
          f.write(payload)
      tf.train.Checkpoint(iterator=self._iterator).read(os.path.join(tmp, 'input')).assert_consumed()
    logging.info('Restored the input position in %.2f s.', time.perf_counter() - tick)

  def skip(self, num_batches: int) -> None:
    """Replays `num_batches` (the fallback when no saved position fits this run)."""
    for _ in range(num_batches):
      next(self._iterator)


def _read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()

"""A tiny real SeqIO task for engine tests (independent of flan_tasks)."""

from __future__ import annotations

import functools

import numpy as np
import seqio
import tensorflow as tf

TASK_NAME = 'engine_test_copy'
VOCAB = seqio.ByteVocabulary()
MODEL_VOCAB_SIZE = 384
_WORDS = ('alpha', 'beta', 'gamma', 'delta', 'eps', 'zeta', 'eta', 'theta', 'iota', 'kappa')


def _examples(split: str, num: int):
  rng = np.random.RandomState(0 if split == 'train' else 1)
  inputs, targets = [], []
  for _ in range(num):
    words = [_WORDS[i] for i in rng.randint(0, len(_WORDS), size=rng.randint(2, 6))]
    inputs.append('copy: ' + ' '.join(words))
    targets.append(' '.join(words))
  return inputs, targets


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, num: int = 256) -> tf.data.Dataset:
  del shuffle_files, seed
  inputs, targets = _examples(split, num)
  return tf.data.Dataset.from_tensor_slices({'inputs': inputs, 'targets': targets})


def exact_match(targets, predictions) -> dict[str, float]:
  return {'exact_match': 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def register(name: str = TASK_NAME, num_examples: int = 256) -> str:
  if name in seqio.TaskRegistry.names():
    return name
  features = {k: seqio.Feature(VOCAB, add_eos=True) for k in ('inputs', 'targets')}
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(functools.partial(_dataset_fn, num=num_examples),
                                      splits=('train', 'validation')),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=features, metric_fns=[exact_match])
  return name


# Registered on import so gin files / --gin.MIXTURE_OR_TASK_MODULE can name this module.
register()
# 13 examples: divides evenly neither over 2 hosts nor over batches of 4.
UNEVEN_TASK_NAME = register('engine_test_copy_13', num_examples=13)

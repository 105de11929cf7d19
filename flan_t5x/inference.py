"""Partitioned inference on a mesh: parameter loading, batched decoding and scoring.

Shared by `flan_t5x.eval`, `flan_t5x.infer` and evaluation during training.
Parameters keep the model's logical shardings; batches are split over the
mesh's data axes (rows padded to a multiple of the data-parallel size).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np

from flan_t5x import checkpoints
from flan_t5x import decoding
from flan_t5x import models
from flan_t5x import partitioning

PyTree = Any


def round_up(value: int, multiple: int) -> int:
  return max(multiple, -(-int(value) // multiple) * multiple)


def param_shardings(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner) -> PyTree:
  boxed = jax.eval_shape(lambda r: model.init_params(r, 1, 8, 8), jax.random.PRNGKey(0))
  return partitioner.logical_to_sharding(nn.get_partition_spec(boxed))


def abstract_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner) -> PyTree:
  """ShapeDtypeStructs with the model's parameter shardings (the target of a restore)."""
  shapes = jax.eval_shape(lambda r: nn.meta.unbox(model.init_params(r, 1, 8, 8)), jax.random.PRNGKey(0))
  shardings = param_shardings(model, partitioner)
  partitioner.check_divisible(shapes, shardings)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)


def load_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
                checkpoint_path: str) -> tuple[PyTree, int]:
  """(params on the mesh, step) from a flan-t5x, Hugging Face or T5X checkpoint."""
  if not checkpoint_path:
    raise ValueError('CHECKPOINT_PATH is required: a flan-t5x MODEL_DIR or checkpoint_<step> directory, '
                     'a Hugging Face directory or a T5X checkpoint.')
  return checkpoints.restore_params(checkpoint_path, abstract_params(model, partitioner), model.config)


def random_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
                  seed: int = 0) -> PyTree:
  shardings = param_shardings(model, partitioner)
  init = lambda r: nn.meta.unbox(model.init_params(r, 1, 8, 8))
  with partitioner.context():
    return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))


class InferenceRunner:
  """Jitted, partitioned decode and score functions for one model and mesh.

  `predict` / `score` take this host's view of the full batch as numpy (every
  host passes the same rows) and return numpy for all rows; the batch is split
  over the data axes of the mesh.
  """

  def __init__(self, model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
               decoding_config: decoding.DecodingConfig = decoding.DecodingConfig()):
    self.model = model
    self.partitioner = partitioner
    self.decoding_config = decoding_config
    self._param_shardings = param_shardings(model, partitioner)
    self._predict_fns: dict[int, Any] = {}
    self._score_fn = partitioner.partition(
        lambda p, inputs, targets: decoding.score_targets(model, p, inputs, targets),
        in_shardings=(self._param_shardings, partitioner.data_sharding, partitioner.data_sharding),
        out_shardings=partitioner.data_sharding)

  def _predict_fn(self, max_decode_length: int):
    if max_decode_length not in self._predict_fns:
      fn = functools.partial(decoding.predict_batch, self.model.module,
                             max_decode_length=max_decode_length, config=self.decoding_config)
      self._predict_fns[max_decode_length] = self.partitioner.partition(
          lambda p, inputs, rng: fn(p, inputs, rng=rng),
          in_shardings=(self._param_shardings, self.partitioner.data_sharding, self.partitioner.replicated),
          out_shardings=(self.partitioner.data_sharding, self.partitioner.data_sharding))
    return self._predict_fns[max_decode_length]

  def _pad_rows(self, *arrays: np.ndarray) -> tuple[int, list[np.ndarray]]:
    rows = arrays[0].shape[0]
    multiple = self.partitioner.data_parallel_size * jax.process_count()
    padded = round_up(rows, multiple)
    return rows, [np.pad(a, ((0, padded - rows),) + ((0, 0),) * (a.ndim - 1)) for a in arrays]

  def _to_global(self, array: np.ndarray) -> jax.Array:
    local_rows = array.shape[0] // jax.process_count()
    start = jax.process_index() * local_rows
    return self.partitioner.shard_batch({'x': array[start:start + local_rows]})['x']

  @staticmethod
  def _to_host(array: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
      return np.asarray(array)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))

  def predict(self, params: PyTree, encoder_input_tokens_BxL: np.ndarray, max_decode_length: int,
              rng: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_BxKxT, scores_BxK), K = num_decodes, best first."""
    rows, (inputs,) = self._pad_rows(np.asarray(encoder_input_tokens_BxL, np.int32))
    rng = jax.random.PRNGKey(0) if rng is None else rng
    tokens, scores = self._predict_fn(int(max_decode_length))(params, self._to_global(inputs), rng)
    return self._to_host(tokens)[:rows], self._to_host(scores)[:rows]

  def score(self, params: PyTree, encoder_input_tokens_BxL: np.ndarray, target_tokens_BxT: np.ndarray
            ) -> np.ndarray:
    """Log-likelihood of each row's target tokens, shape (B,)."""
    rows, (inputs, targets) = self._pad_rows(np.asarray(encoder_input_tokens_BxL, np.int32),
                                             np.asarray(target_tokens_BxT, np.int32))
    scores = self._score_fn(params, self._to_global(inputs), self._to_global(targets))
    return self._to_host(scores)[:rows]


def pad_batch(token_lists: Sequence[Sequence[int]], length: int) -> np.ndarray:
  """Right-pads token lists with 0 to `(len(token_lists), length)`; rows must fit."""
  out = np.zeros((len(token_lists), length), np.int32)
  for row, tokens in enumerate(token_lists):
    if len(tokens) > length:
      raise ValueError(f'Row {row} has {len(tokens)} tokens; expected at most {length}.')
    out[row, :len(tokens)] = tokens
  return out


def fit_tokens(tokens: Sequence[int], length: int, eos_id: int = decoding.EOS_ID) -> tuple[list[int], bool]:
  """Truncates to `length` keeping a final EOS (seqio's trim + append_eos_after_trim); (tokens, truncated)."""
  tokens = list(tokens)
  if len(tokens) <= length:
    return tokens, False
  return tokens[:length - 1] + [eos_id], True

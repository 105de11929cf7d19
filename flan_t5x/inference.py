"""Partitioned inference on a mesh: parameter loading, batched decoding and scoring.

Shared by `flan_t5x.eval`, `flan_t5x.infer` and evaluation during training.
Parameters keep the model's logical shardings; batches are split over the
mesh's data axes (rows padded to a multiple of the data-parallel size, and the
padding dropped from the results).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from flan_t5x import adapters
from flan_t5x import decoding
from flan_t5x import models
from flan_t5x import partitioning
from flan_t5x import train_state

PyTree = Any


def round_up(value: int, multiple: int) -> int:
  return max(multiple, -(-int(value) // multiple) * multiple)


def abstract_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner) -> PyTree:
  """ShapeDtypeStructs with the model's parameter shardings (the target of a restore)."""
  return train_state.param_layout(model, partitioner).abstract


_CHECKPOINT_PATH_REQUIRED = ('CHECKPOINT_PATH is required: a flan-t5x MODEL_DIR or checkpoint_<step> directory, '
                              'a Hugging Face directory or a T5X checkpoint.')


def checkpoint_fingerprint(checkpoint_path: str) -> dict:
  """checkpoint_import.checkpoint_fingerprint of CHECKPOINT_PATH (an adapter's covers its base too);
  load its `resolved` path after."""
  if not checkpoint_path:
    raise ValueError(_CHECKPOINT_PATH_REQUIRED)
  return adapters.fingerprint(checkpoint_path)


def model_for_checkpoint(model: models.EncoderDecoderModel, checkpoint_path: str) -> models.EncoderDecoderModel:
  """`model`, with the LoRA / prompt-tuning configuration of CHECKPOINT_PATH if it is an adapter checkpoint."""
  record = adapters.read_record(checkpoint_path)
  return model if record is None else adapters.with_adapters(model, record, checkpoint_path)


def load_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
                checkpoint_path: str) -> tuple[PyTree, int]:
  """(params on the mesh, step) from a flan-t5x, Hugging Face or T5X checkpoint, or an adapter
  checkpoint (its base + adapters; `model` must then be `model_for_checkpoint`'s)."""
  if not checkpoint_path:
    raise ValueError(_CHECKPOINT_PATH_REQUIRED)
  loaded_model, params, step = adapters.load_for_inference(model, partitioner, checkpoint_path)
  if loaded_model is not model:
    raise ValueError(f'{checkpoint_path} is an adapter checkpoint: build the model with '
                     'inference.model_for_checkpoint first')
  return params, step


class CheckpointGoneError(FileNotFoundError):
  """The checkpoint chosen was deleted while it was read (e.g. a running trainer's keep-N rotation)."""


def unless_gone(resolved: str, advice: str, read: Callable[[], Any]) -> Any:
  """`read()` of the checkpoint at `resolved`; if it fails because the checkpoint was deleted since
  it was chosen (a running trainer's keep-N), CheckpointGoneError with `advice`, never damage."""
  try:
    return read()
  except Exception as error:  # pylint: disable=broad-except
    if '://' in resolved or os.path.exists(resolved):
      raise  # still there: the error is about the checkpoint itself
    raise CheckpointGoneError(f'{resolved} was deleted while it was read (a trainer rotating its checkpoints, '
                              f'keep-N?). {advice}') from error


def load_checkpoint(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
                    checkpoint_path: str, attempts: int = 3):
  """(model for it, params, step, fingerprint) of CHECKPOINT_PATH. Given a MODEL_DIR, its newest
  checkpoint is chosen and fingerprinted, then loaded; if a running trainer deletes it meanwhile
  (keep-N), the newest is chosen again (up to `attempts` times), never reported as damage."""
  for attempt in range(attempts):
    fingerprint = checkpoint_fingerprint(checkpoint_path)
    resolved = fingerprint['resolved']

    def read():
      chosen = model_for_checkpoint(model, resolved)
      return (chosen, *load_params(chosen, partitioner, resolved))
    try:
      chosen, params, step = unless_gone(resolved, 'Give a checkpoint_<step> that is kept, or the MODEL_DIR to '
                                         'read its newest.', read)
      return chosen, params, step, fingerprint
    except CheckpointGoneError:
      if os.path.abspath(resolved) == os.path.abspath(checkpoint_path) or attempt == attempts - 1:
        raise
      print(f'[flan_t5x] {resolved} was deleted while it was read (a trainer rotating its checkpoints); '
            f'choosing the newest checkpoint of {checkpoint_path} again', flush=True)
  raise AssertionError('unreachable')


def random_params(model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
                  seed: int = 0) -> PyTree:
  shardings = train_state.param_layout(model, partitioner).shardings
  with partitioner.context():
    return jax.jit(lambda r: train_state.init_params(model, r), out_shardings=shardings)(
        jax.random.PRNGKey(seed))


class InferenceRunner:
  """Jitted, partitioned decode and score functions for one model and mesh.

  Two ways to call it, both collective (every process calls with the same shapes):
  - `predict` / `score`: every host passes the same rows; each host decodes its slice
    and gets back all rows (evaluation: every host loads the same examples);
  - `predict_local`: each host passes its own rows (the same count on every host, padding
    included) and gets back its own rows' results (inference over per-host inputs).
  """

  def __init__(self, model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
               decoding_config: decoding.DecodingConfig = decoding.DecodingConfig()):
    self.model = model
    self.partitioner = partitioner
    self.decoding_config = decoding_config
    self._param_shardings = train_state.param_layout(model, partitioner).shardings
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

  @property
  def local_row_multiple(self) -> int:
    """Each host's row count must be a multiple of this (its share of the data-parallel devices)."""
    hosts = jax.process_count()
    if self.partitioner.data_parallel_size % hosts:
      raise ValueError(f'The data-parallel mesh size {self.partitioner.data_parallel_size} is not divisible by '
                       f'{hosts} processes; inference needs every host to own whole data shards.')
    return self.partitioner.data_parallel_size // hosts

  def _to_global(self, local_BxN: np.ndarray) -> jax.Array:
    return multihost_utils.host_local_array_to_global_array(
        local_BxN, self.partitioner.mesh, PartitionSpec(self.partitioner.data_axes))

  def _to_local(self, global_array: jax.Array) -> np.ndarray:
    return np.asarray(multihost_utils.global_array_to_host_local_array(
        global_array, self.partitioner.mesh, PartitionSpec(self.partitioner.data_axes)))

  def _pad_local(self, *arrays: np.ndarray) -> tuple[int, list[np.ndarray]]:
    rows = arrays[0].shape[0]
    padded = round_up(rows, self.local_row_multiple)
    return rows, [np.pad(a, ((0, padded - rows),) + ((0, 0),) * (a.ndim - 1)) for a in arrays]

  def _host_slice(self, *arrays: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Pads the full batch to a multiple of the data-parallel size; this host's contiguous part."""
    rows = arrays[0].shape[0]
    padded = round_up(rows, self.local_row_multiple * jax.process_count())
    per_host = padded // jax.process_count()
    start = jax.process_index() * per_host
    padded_arrays = [np.pad(a, ((0, padded - rows),) + ((0, 0),) * (a.ndim - 1)) for a in arrays]
    return rows, [a[start:start + per_host] for a in padded_arrays]

  @staticmethod
  def _gather(local: np.ndarray) -> np.ndarray:
    """All hosts' rows in process order (the inverse of `_host_slice`)."""
    if jax.process_count() == 1:
      return local
    return np.asarray(multihost_utils.process_allgather(local, tiled=True))

  def predict_local(self, params: PyTree, encoder_input_tokens_BxL: np.ndarray, max_decode_length: int,
                    rng: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """This host's rows -> their (tokens_BxKxT, scores_BxK), K = num_decodes, best first."""
    rows, (inputs,) = self._pad_local(np.asarray(encoder_input_tokens_BxL, np.int32))
    rng = jax.random.PRNGKey(0) if rng is None else rng
    tokens, scores = self._predict_fn(int(max_decode_length))(params, self._to_global(inputs), rng)
    return self._to_local(tokens)[:rows], self._to_local(scores)[:rows]

  def predict(self, params: PyTree, encoder_input_tokens_BxL: np.ndarray, max_decode_length: int,
              rng: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same rows on every host -> (tokens_BxKxT, scores_BxK) for all of them."""
    rows, (inputs,) = self._host_slice(np.asarray(encoder_input_tokens_BxL, np.int32))
    tokens, scores = self.predict_local(params, inputs, max_decode_length, rng)
    return self._gather(tokens)[:rows], self._gather(scores)[:rows]

  def score(self, params: PyTree, encoder_input_tokens_BxL: np.ndarray, target_tokens_BxT: np.ndarray
            ) -> np.ndarray:
    """Log-likelihood of each row's target tokens, shape (B,); the same rows on every host."""
    rows, (inputs, targets) = self._host_slice(np.asarray(encoder_input_tokens_BxL, np.int32),
                                               np.asarray(target_tokens_BxT, np.int32))
    scores = self._score_fn(params, self._to_global(inputs), self._to_global(targets))
    return self._gather(self._to_local(scores))[:rows]


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

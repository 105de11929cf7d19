"""TensorBoard scalars written by process 0 only (every job's metrics go through here)."""

from __future__ import annotations

import glob
import os

import jax


class SummaryWriter:
  """Scalars under `log_dir`; a no-op on every process but 0.

  Uses core `tf.summary.write` with the scalars-plugin metadata, so event files
  are TensorBoard-readable without the tensorboard package installed.
  """

  def __init__(self, log_dir: str):
    self.log_dir = log_dir
    self._writer = None
    if jax.process_index() == 0:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  (seqio depends on TF already)
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'),
          data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()
      self._writer = tf.summary.create_file_writer(log_dir)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in scalars.items():
        self._tf.summary.write(name, self._tf.constant(value, self._tf.float32), step=step,
                               metadata=self._metadata)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def read_scalars(log_dir: str, tag: str) -> dict[int, float]:
  """{step: value} of one scalar from the event files in `log_dir`; a step written twice (a resumed
  run) keeps its last value."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for path in sorted(glob.glob(os.path.join(log_dir, 'events.*')), key=os.path.getmtime):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values

"""`t5x.gin_utils` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
from __future__ import annotations

import os

import gin

from flan_t5x import checkpoints


def summarize_gin_config(model_dir: str, summary_writer=None, step: int | None = None) -> None:
  """T5X's `train.summarize_config_fn` default: the operative gin config as MODEL_DIR/config.gin
  (flan_t5x's summary writer is not passed; TensorBoard gets no text summary)."""
  del summary_writer, step
  checkpoints.write_text_atomically(os.path.join(model_dir, 'config.gin'), gin.config_str())

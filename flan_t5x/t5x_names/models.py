"""`t5x.models` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
from __future__ import annotations

from flan_t5x import decoding
from flan_t5x import t5x_names
from flan_t5x.models import EncoderDecoderModel


def get_input_vocabulary(model: EncoderDecoderModel):
  """T5X's models.get_input_vocabulary."""
  return model.input_vocabulary


def get_output_vocabulary(model: EncoderDecoderModel):
  """T5X's models.get_output_vocabulary."""
  return model.output_vocabulary


def bound_decoding_config(model: EncoderDecoderModel) -> decoding.DecodingConfig:
  """How T5X would decode with this model: its `decode_fn` (gin-bound parameters applied) for the
  `num_decodes` that gin binds on `models.EncoderDecoderModel.predict_batch_with_aux` (T5X's default 1)."""
  num_decodes = t5x_names.bound_parameter(EncoderDecoderModel.predict_batch_with_aux, 'num_decodes')
  return model.decoding_config(1 if num_decodes is None else num_decodes)

"""`t5x.decoding` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py): T5X's decode
functions as `EncoderDecoderModel.decode_fn` values, with T5X's parameters and defaults."""
# pylint: disable=unused-import
from flan_t5x.decoding import t5x_beam_search as beam_search
from flan_t5x.decoding import t5x_temperature_sample as temperature_sample

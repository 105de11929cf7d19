"""`t5x.examples.t5.network` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
# pylint: disable=unused-import
from flan_t5x.network import T5Config
from flan_t5x.network import Transformer

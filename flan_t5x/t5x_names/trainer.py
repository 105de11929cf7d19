"""`t5x.trainer` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
# pylint: disable=unused-import
from flan_t5x.actions import TerminateOnNanAction
from flan_t5x.trainer import Trainer

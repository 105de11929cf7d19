"""`t5x.utils` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
# pylint: disable=unused-import
from flan_t5x.checkpoints import CheckpointConfig
from flan_t5x.checkpoints import RestoreCheckpointConfig
from flan_t5x.checkpoints import SaveCheckpointConfig
from flan_t5x.data import DatasetConfig
from flan_t5x.schedules import create_learning_rate_scheduler

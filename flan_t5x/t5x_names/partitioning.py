"""`t5x.partitioning` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
# pylint: disable=unused-import
from flan_t5x.partitioning import PjitPartitioner
from flan_t5x.partitioning import standard_logical_axis_rules

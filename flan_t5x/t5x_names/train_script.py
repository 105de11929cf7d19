"""What `import __main__ as train_script` names under `python -m flan_t5x.train`: T5X's `train`.

flan_t5x's `train` takes T5X's arguments itself (plus flan_t5x's own), so this is the same function.
"""
# pylint: disable=unused-import
from flan_t5x.training import train

"""`t5x.optimizers` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py): optax
optimizers as T5X's `OPTIMIZER = @optimizers.chain()` with `transformations = [@optax.adamw(), ...]`."""
# pylint: disable=unused-import
from flan_t5x.optimizers import chain

"""`t5x.adafactor` names served by flan_t5x (see flan_t5x/t5x_names/__init__.py)."""
# pylint: disable=unused-import
from flan_t5x.optimizers import Adafactor


def standard_logical_factor_rules() -> dict[str, str]:
  """T5X's rules (logical axis -> how Adafactor factors it), for reference and for gin files that
  name them. flan_t5x's Adafactor does not take rules (`Adafactor.logical_factor_rules` is refused):
  it factors every matrix whose dims are at least `min_dim_size_to_factor`, the same dims for the
  rank-2 kernels of unscanned layers."""
  return {'vocab': 'column', 'embed': 'row', 'mlp': 'column', 'heads': 'column', 'kv': 'column',
          'joined_kv': 'column', 'relpos_buckets': 'none', 'layers': 'batch', 'stack': 'batch',
          'q_wi_fused': 'column', 'o_wo_fused': 'column', 'multiquery_heads': 'column', 'kv_fused': 'column',
          'layer_norm_scale': 'none', 'mlp_activations': 'column'}

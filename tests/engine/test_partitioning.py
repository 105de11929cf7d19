"""Logical-axis rules, mesh errors, and 8-device data/model-parallel equivalence (subprocess)."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flan_t5x import layers
from flan_t5x import partitioning

HERE = os.path.dirname(os.path.abspath(__file__))


def test_rules_table_matches_t5x():
  rules = dict(partitioning.standard_logical_axis_rules())
  assert rules['batch'] == 'data' and rules['mlp'] == 'model' and rules['joined_kv'] == 'model'
  assert rules['vocab'] == 'model' and rules['embed'] is None and rules['kv'] is None
  two_d = partitioning.standard_logical_axis_rules(2, 2)
  assert [t for n, t in two_d if n == 'embed'] == ['model', 'data']
  with pytest.raises(ValueError, match='activation_partitioning_dims=3'):
    partitioning.standard_logical_axis_rules(3, 1)


def test_unknown_logical_axis_is_a_clear_error():
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  with pytest.raises(ValueError, match=r"\['bogus'\].*of \['w'\]"):
    partitioner.logical_to_sharding({'w': P('embed', 'bogus')})
  with partitioner.context(), pytest.raises(ValueError, match='bogus'):
    layers.constrain(jnp.ones((2, 2)), ('batch', 'bogus'))


def test_partitions_must_divide_devices():
  with pytest.raises(ValueError, match='1 devices cannot be split into model-parallel groups of 2'):
    partitioning.PjitPartitioner(num_partitions=2, devices=jax.devices()[:1])


@pytest.fixture(scope='module')
def mesh_report():
  env = dict(os.environ)
  env['XLA_FLAGS'] = ('--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0')
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, os.path.join(HERE, 'mesh_check.py')], env=env,
                        capture_output=True, text=True, timeout=400)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('MESH_REPORT ')]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  return json.loads(lines[-1][len('MESH_REPORT '):])


@pytest.mark.slow
def test_data_and_model_parallel_losses_match_single_device(mesh_report):
  assert mesh_report['num_devices'] == 8
  losses = mesh_report['losses']
  assert losses['1'][2] < losses['1'][0]
  np.testing.assert_allclose(losses['dp8'], losses['1'], rtol=2e-5)
  np.testing.assert_allclose(losses['dp4_mp2'], losses['1'], rtol=2e-5)


@pytest.mark.slow
def test_parameters_and_batches_are_really_sharded(mesh_report):
  specs = mesh_report['specs']
  assert specs['dp4_mp2']['mesh'] == {'data': 4, 'model': 2}
  assert specs['dp4_mp2']['wi_0'] == ['None', 'model']
  assert specs['dp4_mp2']['wi_0_shard_shape'] == [32, 32]  # (embed, mlp/2)
  assert specs['dp4_mp2']['embedding_shard_shape'] == [192, 32]  # (vocab/2, embed)
  assert specs['dp8']['wi_0_shard_shape'] == [32, 64]  # replicated under pure data parallelism
  assert specs['dp8']['batch_shard_rows'] == 1 and specs['dp4_mp2']['batch_shard_rows'] == 2
  assert specs['1']['batch_shard_rows'] == 8


@pytest.mark.slow
def test_mesh_errors_and_replica_axis(mesh_report):
  assert 'Global batch size 12 is not divisible by the data-parallel mesh size 8' in mesh_report['indivisible_error']
  assert '8 devices cannot be split into model-parallel groups of 3' in mesh_report['partitions_error']
  assert mesh_report['replica_mesh'] == {'replica': 2, 'data': 2, 'model': 2}
  assert mesh_report['replica_batch_rule'] == ['replica', 'data']

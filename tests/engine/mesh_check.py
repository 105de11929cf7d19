"""Run in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by the caller).

Trains 3 steps on 1 device, 8-way data parallel and 4x2 data x model parallel
from the same init and batches; prints a JSON report.
"""

import json
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from flan_t5x import data  # noqa: E402
from flan_t5x import partitioning  # noqa: E402

import helpers  # noqa: E402


def main():
  devices = jax.devices()
  model = helpers.tiny_model()
  cfg = helpers.dataset_cfg(batch_size=8)
  dataset = data.get_dataset(cfg, model.feature_converter(True), seed=0, num_epochs=None)
  batches = [b for _, b in zip(range(3), data.InputIterator(dataset))]
  report = {'num_devices': len(devices), 'losses': {}, 'specs': {}}
  layouts = {'1': dict(devices=devices[:1]), 'dp8': dict(devices=devices),
             'dp4_mp2': dict(devices=devices, num_partitions=2)}
  for name, kwargs in layouts.items():
    partitioner = partitioning.PjitPartitioner(**kwargs)
    trainer = helpers.make_trainer(model=model, partitioner=partitioner)
    state = trainer.init_state()
    losses = []
    for batch in batches:
      state, metrics = trainer.train_step(state, batch)
      losses.append(float(metrics['loss']))
    report['losses'][name] = losses
    wi = state.params['encoder']['layers_0']['mlp']['wi_0']['kernel']
    emb = state.params['token_embedder']['embedding']
    report['specs'][name] = {
        'mesh': dict(partitioner.mesh.shape),
        'wi_0': [str(a) for a in wi.sharding.spec], 'wi_0_shard_shape': list(wi.addressable_shards[0].data.shape),
        'embedding_shard_shape': list(emb.addressable_shards[0].data.shape),
        'batch_shard_rows': partitioner.shard_batch(batches[0])['encoder_input_tokens'].addressable_shards[0].data.shape[0],
    }
  try:
    partitioning.PjitPartitioner(devices=devices).check_batch_size(12)
  except ValueError as err:
    report['indivisible_error'] = str(err)
  try:
    partitioning.PjitPartitioner(devices=devices, num_partitions=3)
  except ValueError as err:
    report['partitions_error'] = str(err)
  replica = partitioning.PjitPartitioner(devices=devices, num_replicas=2, num_partitions=2)
  report['replica_mesh'] = dict(replica.mesh.shape)
  report['replica_batch_rule'] = [list(r[1]) for r in replica.logical_axis_rules if r[0] == 'batch'][0]
  print('MESH_REPORT ' + json.dumps(report))


if __name__ == '__main__':
  main()

"""Run in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by the caller).

LoRA (all kernels, r=4) on the same base and batches: 3 steps on 1 device, 8-way data parallel and
4x2 data x model parallel; prints the losses and the adapters' shardings as JSON.
"""

import json
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from flan_t5x import data  # noqa: E402
from flan_t5x import lora  # noqa: E402
from flan_t5x import partitioning  # noqa: E402

import helpers  # noqa: E402


def main():
  devices = jax.devices()
  base = jax.tree.map(np.asarray, helpers.make_trainer(helpers.tiny_model()).init_state().params)
  model = helpers.tiny_model(lora=lora.LoraConfig(rank=4, alpha=8.0, targets='all'))
  cfg = helpers.dataset_cfg(batch_size=8)
  dataset = data.get_dataset(cfg, model.feature_converter(True), seed=0, num_epochs=None)
  batches = [b for _, b in zip(range(3), data.InputIterator(dataset))]
  report = {'num_devices': len(devices), 'losses': {}, 'specs': {}, 'adapter_sums': {}}
  layouts = {'1': dict(devices=devices[:1]), 'dp8': dict(devices=devices),
             'dp4_mp2': dict(devices=devices, num_partitions=2)}
  for name, kwargs in layouts.items():
    partitioner = partitioning.PjitPartitioner(**kwargs)
    trainer = helpers.make_trainer(model=model, partitioner=partitioner)
    placed = jax.device_put(base, trainer.frozen_layout.shardings)
    state = trainer.state_from_params(placed)
    losses = []
    for batch in batches:
      state, metrics = trainer.train_step(state, batch)
      losses.append(float(metrics['loss']))
    report['losses'][name] = losses
    attention = state.params['encoder']['layers_0']['attention']
    wo = state.params['encoder']['layers_0']['mlp']['wo']
    kernel = trainer.frozen_params['encoder']['layers_0']['attention']['query']['kernel']
    report['specs'][name] = {
        'mesh': dict(partitioner.mesh.shape),
        'query_kernel': [str(a) for a in kernel.sharding.spec],
        'query_lora_a': [str(a) for a in attention['query']['lora_a'].sharding.spec],
        'query_lora_b': [str(a) for a in attention['query']['lora_b'].sharding.spec],
        'query_lora_b_shard': list(attention['query']['lora_b'].addressable_shards[0].data.shape),
        'wo_lora_a': [str(a) for a in wo['lora_a'].sharding.spec],
    }
    report['adapter_sums'][name] = [float(np.abs(np.asarray(x)).sum())
                                    for x in jax.tree_util.tree_leaves(state.params)]
  print('PEFT_MESH_REPORT ' + json.dumps(report))


if __name__ == '__main__':
  main()

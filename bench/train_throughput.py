"""Train-step throughput and MFU of the flan_t5x engine (fp32, batch 8, inputs 512 / targets 128).

  .venv/bin/python bench/train_throughput.py [--models tiny,flan_t5_small] [--steps 5]

MFU = (the model's FLOPs per train step / step time) / measured peak, where the FLOPs are XLA's
count for the step with the full-logits loss (synthetic_training.model_step_flops: XLA counts the
chunked loss's loop body once; `compiled_step_flops` in the JSON is that count) and the peak is the
best fp32 2048x2048 matmul rate on this machine.
If `torch` and `transformers` are installed (`.[bench]`), Hugging Face T5
(T5.1.1 config, gated-GELU, untied head) trained with torch AdamW is timed on
the same shapes as a peer, in a child process (flan_t5x.hf_peer: torch next to
JAX/TensorFlow segfaults). Peak RSS is reported per side. "At 100% MFU" is the ratio ours
would reach if our step's FLOPs ran at the measured peak: the most this machine allows. Ours keeps
freed host memory as flan_t5x's jobs do on CPU hosts (flan_t5x/host_memory.py;
--no-keep_freed_host_memory: glibc's defaults); the peer runs with glibc's defaults and again with
the same settings (--peer_malloc), each in its own child. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import hardware  # noqa: E402  (bench/ is on sys.path when run as a script)

hardware.keep_freed_host_memory_unless_disabled(sys.argv)  # before JAX or TensorFlow start threads

import jax  # noqa: E402
import numpy as np  # noqa: E402
import bench_results  # noqa: E402
from hardware import compiled_peak_bytes, ratio_at_full_mfu  # noqa: E402
from synthetic_training import (MODEL_DIMS, benchmark_trainer, cost_analysis, model_step_flops, synthetic_batch,  # noqa: E402
                                timed_train_steps)

from flan_t5x import hf_peer_client  # noqa: E402



def bench_ours(name: str, batch: int, inputs: int, targets: int, steps: int, dtype: str = 'float32') -> dict:
  vocab = MODEL_DIMS[name][-1]
  trainer = benchmark_trainer(name, batch, inputs, targets, dtype)
  state = trainer.init_state()
  local = synthetic_batch(batch, inputs, targets, vocab)
  sharded = trainer.partitioner.shard_batch(local)
  compiled = trainer._train_step.lower(state, trainer.frozen_params, sharded, jax.random.PRNGKey(0)).compile()
  cost = cost_analysis(compiled)
  step_flops = model_step_flops(name, batch, inputs, targets, dtype)
  step_memory = compiled_peak_bytes(compiled)
  state, metrics, times, cores_busy = timed_train_steps(trainer, state, local, steps)
  step_time = float(np.median(times))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  return {'model': name, 'dtype': dtype, 'params': int(num_params), 'step_time_s': step_time,
          'tokens_per_s': batch * (inputs + targets) / step_time, 'step_flops': step_flops,
          'compiled_step_flops': float(cost.get('flops', 0.0)),
          'cores_busy': cores_busy,
          'achieved_flops_per_s': step_flops / step_time, 'loss': float(metrics['loss']),
          'compiled_step_peak_mib': step_memory / 2**20 if step_memory is not None else None}


def bench_peer(name: str, batch: int, inputs: int, targets: int, steps: int,
               keep_freed_host_memory: bool = False) -> dict | None:
  """The same shapes in Hugging Face T5 + torch AdamW, timed in the torch child process (with glibc's
  defaults, or with our host-memory settings)."""
  emb, heads, layers, head_dim, mlp, vocab = MODEL_DIMS[name]
  config = dict(vocab_size=vocab, d_model=emb, d_kv=head_dim, d_ff=mlp, num_layers=layers,
                num_decoder_layers=layers, num_heads=heads, feed_forward_proj='gated-gelu',
                tie_word_embeddings=False, dropout_rate=0.0)
  local = synthetic_batch(batch, inputs, targets, vocab)
  try:
    response, _ = hf_peer_client.call(
        'train-timing', {'config': config, 'steps': steps, 'lr': 1e-3,
                         'keep_freed_host_memory': keep_freed_host_memory},
        {k: local[k] for k in ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens')},
        timeout=None)
  except hf_peer_client.HFPeerUnavailable:
    return None
  step_time = response['step_time_s']
  return {'model': name, 'framework': f"torch {response['torch']} / transformers {response['transformers']}",
          'params': response['params'], 'step_time_s': step_time,
          'tokens_per_s': batch * (inputs + targets) / step_time, 'loss': response['loss'],
          'num_threads': response['num_threads'], 'peak_rss_mib': response['peak_rss_mib'],
          'cores_busy': response.get('cores_busy'), 'keep_freed_host_memory': response['keep_freed_host_memory']}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--models', default='tiny,flan_t5_small')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5)
  hardware.add_host_memory_arguments(parser)
  args = parser.parse_args()
  hardware.check_host_memory_argument(parser, args)
  peer_settings = hardware.peer_malloc_settings(args)
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  peak = hardware.machine_record()['xla_matmul_peak_flops']
  results = {'device': str(jax.devices()[0]), 'matmul_peak_flops': peak,
             'batch': args.batch, 'inputs': args.inputs, 'targets': args.targets, 'runs': []}
  for name in args.models.split(','):
    ours = bench_ours(name, args.batch, args.inputs, args.targets, args.steps)
    ours['mfu'] = ours['achieved_flops_per_s'] / peak
    line = (f"{name}: {ours['tokens_per_s']:.0f} tok/s, MFU {ours['mfu']:.1%} of {peak / 1e9:.1f} GFLOP/s, "
            f"{ours['cores_busy']:.2f} cores busy")
    run = {'ours': ours}
    # 'peer': glibc's defaults (what a torch user gets); 'peer_kept_memory': our host-memory settings.
    for keep in peer_settings:
      key = 'peer_kept_memory' if keep else 'peer'
      peer = bench_peer(name, args.batch, args.inputs, args.targets, args.steps, keep)
      run[key] = peer
      run[f'ratio_ours_over_{key}'] = ours['tokens_per_s'] / peer['tokens_per_s'] if peer else None
      full_key = 'ratio_at_full_mfu' + ('_peer_kept_memory' if keep else '')
      run[full_key] = (ratio_at_full_mfu(peer['step_time_s'], ours['step_flops'], peak)
                       if peer else None)
      line += (f"; HF peer{' (host memory kept)' if keep else ''} {peer['tokens_per_s']:.0f} tok/s, "
               f"{peer['cores_busy']:.2f} cores busy, ratio {run[f'ratio_ours_over_{key}']:.2f} "
               f"(at 100% MFU: {run[full_key] or float('nan'):.2f})" if peer
               else '; HF peer not installed')
    results['runs'].append(run)
    print(line, flush=True)
  # ru_maxrss is the process high-water mark (KiB on Linux): an upper bound for one train step. The
  # peer's is its own child's (RUSAGE_SELF excludes children), in each run's peer entry.
  results['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  path = bench_results.write_json('train_throughput', results)
  print(f'peak RSS {results["peak_rss_mib"]:.0f} MiB; wrote {path}')


if __name__ == '__main__':
  main()

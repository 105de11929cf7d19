"""LoRA (r=16 on q and v) against full finetuning, and against Hugging Face peft LoRA, per model.

  .venv/bin/python bench/peft_memory.py [--models flan_t5_small,flan_t5_base] [--batch 8]
                                        [--inputs 128 --targets 32] [--steps 5]

For each model (Flan-T5 dimensions, fp32, random weights: speed and memory do not depend on them)
and each arm (full finetuning, LoRA), one child process of this script trains on a fixed synthetic
batch with AdamW and reports: trainable-parameter fraction, the bytes of the train state
(trainable parameters + optimizer state) and of the frozen base, the compiled step's memory (XLA's
memory_analysis: arguments + outputs + temporaries - aliased, i.e. what the device needs during a
step), the process's peak RSS, and the median step time. Separate processes keep each arm's RSS its
own. With torch, transformers and peft installed (`.[bench]`), peft LoRA with the same rank, alpha
and targets on transformers' T5 (same dimensions, batch and AdamW) is timed in the torch child
(flan_t5x.hf_peer). Prints ours LoRA / full and ours / peer ratios; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import hardware  # noqa: E402
import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)
from synthetic_training import MODEL_DIMS, synthetic_batch, timed_train_steps  # noqa: E402

RANK, ALPHA = 16, 32.0


def _nbytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def run_arm(name: str, arm: str, batch: int, inputs: int, targets: int, steps: int) -> dict:
  """One arm in this process (the child): 'full' or 'lora'."""
  import jax  # pylint: disable=g-import-not-at-top
  from flan_t5x import lora, models, network, optimizers, partitioning, schedules  # pylint: disable=g-import-not-at-top
  from flan_t5x import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  emb, heads, layers, head_dim, mlp, vocab = MODEL_DIMS[name]
  cfg = network.T5Config(vocab_size=vocab, emb_dim=emb, num_heads=heads, num_encoder_layers=layers,
                         num_decoder_layers=layers, head_dim=head_dim, mlp_dim=mlp, dropout_rate=0.0,
                         dtype='float32',
                         lora=lora.LoraConfig(rank=RANK, alpha=ALPHA, targets='qv') if arm == 'lora' else None)
  model = models.EncoderDecoderModel(network.Transformer(cfg), optimizer_def=optimizers.AdamW(),
                                     loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  trainer = trainer_lib.Trainer(
      model=model, partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]),
      learning_rate_fn=schedules.create_learning_rate_scheduler('constant', 1e-3), batch_size=batch,
      task_feature_lengths={'inputs': inputs, 'targets': targets})
  state = trainer.init_state()  # a LoRA model's base is trainer.frozen_params
  local = synthetic_batch(batch, inputs, targets, vocab)
  sharded = trainer.partitioner.shard_batch(local)
  compiled = trainer._train_step.lower(state, trainer.frozen_params, sharded,  # pylint: disable=protected-access
                                       jax.random.PRNGKey(0)).compile()
  memory = compiled.memory_analysis()
  step_bytes = None
  if memory is not None:
    step_bytes = int(memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
                     - memory.alias_size_in_bytes)
  state, metrics, times, cores_busy = timed_train_steps(trainer, state, local, steps)
  trainable = sum(x.size for x in jax.tree.leaves(state.params))
  frozen = sum(x.size for x in jax.tree.leaves(trainer.frozen_params))
  return {'model': name, 'arm': arm, 'trainable_params': int(trainable), 'params': int(trainable + frozen),
          'trainable_fraction': trainable / (trainable + frozen),
          'train_state_bytes': _nbytes(state.params) + _nbytes(state.opt_state),
          'frozen_bytes': _nbytes(trainer.frozen_params), 'step_memory_bytes': step_bytes,
          'step_time_s': float(np.median(times)), 'step_times_s': times, 'loss': float(metrics['loss']),
          'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(name: str, arm: str, args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), '--child', arm, '--models', name, '--batch', str(args.batch),
             '--inputs', str(args.inputs), '--targets', str(args.targets), '--steps', str(args.steps)]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f'{name}/{arm} failed:\n{done.stderr[-3000:]}')
  return json.loads([l for l in done.stdout.splitlines() if l.startswith('ARM ')][-1][4:])


def run_peer(name: str, args) -> dict | None:
  from flan_t5x import hf_peer_client  # pylint: disable=g-import-not-at-top
  emb, heads, layers, head_dim, mlp, vocab = MODEL_DIMS[name]
  config = dict(vocab_size=vocab, d_model=emb, d_kv=head_dim, d_ff=mlp, num_layers=layers,
                num_decoder_layers=layers, num_heads=heads, feed_forward_proj='gated-gelu',
                tie_word_embeddings=False, dropout_rate=0.0)
  local = synthetic_batch(args.batch, args.inputs, args.targets, vocab)
  try:
    response, _ = hf_peer_client.call(
        'peft-train-timing', {'config': config, 'steps': args.steps, 'lr': 1e-3,
                              'lora': {'r': RANK, 'lora_alpha': ALPHA, 'lora_dropout': 0.0,
                                       'target_modules': ['q', 'v']}},
        {k: local[k] for k in ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens')},
        timeout=None)
  except hf_peer_client.HFPeerUnavailable:
    return None
  return {'framework': f"torch {response['torch']} / transformers {response['transformers']} / "
                       f"peft {response['peft']}",
          'trainable_params': response['trainable_params'], 'params': response['params'],
          'trainable_fraction': response['trainable_params'] / response['params'],
          'step_time_s': response['step_time_s'], 'step_times_s': response['step_times_s'],
          'loss': response['loss'], 'num_threads': response['num_threads'],
          'peak_rss_mib': response['peak_rss_mib']}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--models', default='flan_t5_small,flan_t5_base')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=128)
  parser.add_argument('--targets', type=int, default=32)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--child', choices=('full', 'lora'), default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print('ARM ' + json.dumps(run_arm(args.models, args.child, args.batch, args.inputs, args.targets,
                                      args.steps)), flush=True)
    return
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  results = {'cpu_count': os.cpu_count(), 'batch': args.batch, 'inputs': args.inputs, 'targets': args.targets,
             'optimizer': 'AdamW (both sides)', 'lora': {'rank': RANK, 'alpha': ALPHA, 'targets': 'q, v'},
             'runs': []}
  mib = lambda b: b / 2**20 if b is not None else float('nan')
  for name in args.models.split(','):
    full, lora_arm = run_child(name, 'full', args), run_child(name, 'lora', args)
    peer = run_peer(name, args)
    run = {'model': name, 'full': full, 'lora': lora_arm, 'peer_peft_lora': peer,
           'lora_over_full': {
               'step_time': lora_arm['step_time_s'] / full['step_time_s'],
               'train_state_bytes': lora_arm['train_state_bytes'] / full['train_state_bytes'],
               'step_memory_bytes': (lora_arm['step_memory_bytes'] / full['step_memory_bytes']
                                     if full['step_memory_bytes'] else None),
               'peak_rss': lora_arm['peak_rss_mib'] / full['peak_rss_mib']},
           'ours_over_peer': ({'step_time': lora_arm['step_time_s'] / peer['step_time_s'],
                               'peak_rss': lora_arm['peak_rss_mib'] / peer['peak_rss_mib']} if peer else None)}
    results['runs'].append(run)
    print(f"{name}: LoRA trains {lora_arm['trainable_fraction']:.3%} of {lora_arm['params']:,} parameters; "
          f"train state {mib(lora_arm['train_state_bytes']):.1f} MiB vs full {mib(full['train_state_bytes']):.1f} MiB; "
          f"step memory {mib(lora_arm['step_memory_bytes']):.0f} vs {mib(full['step_memory_bytes']):.0f} MiB; "
          f"peak RSS {lora_arm['peak_rss_mib']:.0f} vs {full['peak_rss_mib']:.0f} MiB; step "
          f"{lora_arm['step_time_s']:.3f} s vs {full['step_time_s']:.3f} s "
          f"(LoRA/full {run['lora_over_full']['step_time']:.2f})", flush=True)
    if peer:
      print(f"  peft peer ({peer['framework']}): trains {peer['trainable_fraction']:.3%}; step "
            f"{peer['step_time_s']:.3f} s, peak RSS {peer['peak_rss_mib']:.0f} MiB; ours/peer step time "
            f"{run['ours_over_peer']['step_time']:.2f}, peak RSS {run['ours_over_peer']['peak_rss']:.2f}", flush=True)
    else:
      print('  peft peer: torch/transformers/peft not installed', flush=True)
  path = bench_results.write_json('peft_memory', results)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()

r"""Decoding throughput: generated tokens/s of flan-t5x vs Hugging Face `generate`, same weights.

  .venv/bin/python bench/decode_throughput.py [--input_length 128] [--new_tokens 32] [--repeats 2]

FLAN-T5 Small configuration, random weights, fp32, on whatever JAX/torch see
(CPU here). Greedy and beam-4 at batch 1 and 16; EOS stopping is disabled on
both sides (min length = max length) so every run generates exactly
`new_tokens` tokens per sequence. Ours: KV-cached decoder in a compiled
while_loop (compile excluded, timed after a warm-up call). Peer:
transformers T5ForConditionalGeneration.generate (use_cache=True) loaded from
our weights exported with `flan_t5x.hf_format.save`, run after ours in a child
process (flan_t5x.hf_peer: torch next to JAX/TensorFlow segfaults). MFU: the
matmul FLOPs of the decode (`model_flops`, counted from the config) per second
over the best fp32 2048^2 matmul rate; memory: XLA's compiled plan per case
and each process's peak RSS. "At 100% MFU": the ratio ours would reach with every matmul at the
measured peak, the most this machine allows. Ours keeps freed host memory as flan_t5x's jobs do on
CPU hosts (flan_t5x/host_memory.py; --no-keep_freed_host_memory: glibc's defaults); the peer runs
with glibc's defaults and again with the same settings (--peer_malloc). Writes
bench/results/decode_throughput_<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time

import hardware  # bench/ is on sys.path when run as a script

if __name__ == '__main__':  # before JAX or TensorFlow start threads (other benchmarks import this file)
  hardware.keep_freed_host_memory_unless_disabled(sys.argv)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_results  # noqa: E402
from hardware import compiled_peak_bytes  # noqa: E402

from flan_t5x import decoding  # noqa: E402
from flan_t5x import hf_format  # noqa: E402
from flan_t5x import hf_peer_client  # noqa: E402
from flan_t5x import models  # noqa: E402
from flan_t5x import network  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def flan_t5_small(vocab_size: int = 32128) -> network.T5Config:
  return network.T5Config(vocab_size=vocab_size, emb_dim=512, num_heads=6, num_encoder_layers=8,
                          num_decoder_layers=8, head_dim=64, mlp_dim=1024, dropout_rate=0.0, dtype='float32')




def params_without_eos(module):
  """Random parameters of `module` (seed 0) with EOS's column of the logits kernel set to 0: random
  logits put EOS below the row maximum, so every row decodes the full length on both sides."""
  params = nn.meta.unbox(models.EncoderDecoderModel(module).init_params(jax.random.PRNGKey(0), 1, 8, 8))
  kernel = np.asarray(params['decoder']['logits_dense']['kernel']).copy()
  kernel[:, decoding.EOS_ID] = 0.0
  params['decoder']['logits_dense']['kernel'] = jnp.asarray(kernel)
  return params


def _time(fn, repeats: int) -> float:
  fn()  # warm-up / compile
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - tick)
  return best


def model_flops(config: network.T5Config, batch: int, input_length: int, decodes: int, new_tokens: int
                ) -> float:
  """Matmul FLOPs of one decode call (the encoder once, then `new_tokens` cached decoder steps for
  `batch * decodes` sequences); the loop's trip count is not in XLA's cost analysis, so counted here."""
  emb, joined, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  mlp_params = (len(config.mlp_activations) + 1) * emb * mlp
  enc_tokens, seqs = batch * input_length, batch * decodes
  encoder = config.num_encoder_layers * (2 * enc_tokens * (4 * emb * joined + mlp_params)
                                         + 4 * batch * input_length ** 2 * joined)
  cross_kv = config.num_decoder_layers * 2 * enc_tokens * 2 * emb * joined
  per_token_params = 6 * emb * joined + mlp_params  # self q,k,v,o + cross q,o + mlp
  decoder = 0
  for step in range(1, new_tokens + 1):
    attention = 4 * seqs * joined * (step + input_length)
    decoder += config.num_decoder_layers * (2 * seqs * per_token_params + attention)
    decoder += 2 * seqs * emb * config.vocab_size
  return float(encoder + cross_kv + decoder)


def ours(module, params, inputs_BxL, new_tokens, cfg, repeats):
  fn = decoding.make_predict_fn(module, new_tokens, cfg)
  params = jax.device_put(params)
  inputs = jnp.asarray(inputs_BxL)
  key = jax.random.PRNGKey(0)
  peak_bytes = compiled_peak_bytes(fn.lower(params, inputs, key).compile())
  run = lambda: jax.block_until_ready(fn(params, inputs, key))
  seconds = _time(run, repeats)
  tokens = np.asarray(run()[0])
  eos = tokens[:, 0] == decoding.EOS_ID  # best decode per row; the loop stops at EOS
  generated = int(sum(np.argmax(row) + 1 if row.any() else new_tokens for row in eos))
  return seconds, generated, peak_bytes


def peer(model_dir: str, cases: list[tuple[np.ndarray, int]], new_tokens: int, repeats: int,
         keep_freed_host_memory: bool = False) -> list[tuple[float, int, float]] | None:
  """(seconds, tokens, peak RSS) of HF `generate` per (inputs_BxL, beams) case, in the torch child
  process (with glibc's defaults, or with our host-memory settings)."""
  arrays = {f'inputs_{i}': inputs_BxL for i, (inputs_BxL, _) in enumerate(cases)}
  request = {'model_dir': model_dir, 'num_threads': os.cpu_count() or 1,
             'keep_freed_host_memory': keep_freed_host_memory,
             'cases': [{'inputs': f'inputs_{i}', 'beams': beams, 'new_tokens': new_tokens,
                        'repeats': repeats, 'length_penalty': 0.6 if beams > 1 else 1.0}
                       for i, (_, beams) in enumerate(cases)]}
  try:
    response, _ = hf_peer_client.call('generate-timing', request, arrays, timeout=None)
  except hf_peer_client.HFPeerUnavailable:
    return None
  return [(r['seconds'], r['tokens'], response['peak_rss_mib']) for r in response['results']]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--input_length', type=int, default=128)
  parser.add_argument('--new_tokens', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--batch_sizes', default='1,16')
  parser.add_argument('--no_peer', action='store_true')
  hardware.add_host_memory_arguments(parser)
  args = parser.parse_args()
  hardware.check_host_memory_argument(parser, args)
  peer_settings = hardware.peer_malloc_settings(args)
  if args.no_peer:
    peer_settings = []
  print(hardware.summary_line(hardware.machine_record()), flush=True)

  config = flan_t5_small()
  module = network.Transformer(config)
  params = params_without_eos(module)

  peak_flops = hardware.machine_record()['xla_matmul_peak_flops']
  rng = np.random.RandomState(0)
  results, cases = [], []
  for batch in [int(b) for b in args.batch_sizes.split(',')]:
    inputs = rng.randint(2, config.vocab_size - 100, size=(batch, args.input_length)).astype(np.int32)
    inputs[:, -1] = decoding.EOS_ID
    for method, beams in (('greedy', 1), ('beam', 4)):
      cfg = decoding.DecodingConfig(method, beams, alpha=0.6)
      ours_s, ours_tokens, peak_bytes = ours(module, params, inputs, args.new_tokens, cfg, args.repeats)
      flops = model_flops(config, batch, args.input_length, beams, args.new_tokens)
      results.append({'method': f'{method}-{beams}' if beams > 1 else method, 'batch': batch,
                      'ours_seconds': ours_s, 'ours_tokens': ours_tokens,
                      'ours_tokens_per_s': ours_tokens / ours_s, 'model_flops': flops,
                      'ours_mfu': flops / ours_s / peak_flops,
                      'ours_compiled_peak_mib': peak_bytes / 2**20 if peak_bytes is not None else None})
      cases.append((inputs, beams))
      print(json.dumps(results[-1]), flush=True)

  # The peer runs after ours, all cases in one child per setting (one torch import and model load).
  # 'peer_*': glibc's defaults (what a torch user gets); 'peer_kept_memory_*': our host-memory settings.
  timings = {}
  if peer_settings:
    with tempfile.TemporaryDirectory() as tmp:
      hf_format.save(jax.tree.map(np.asarray, params), config, tmp)
      for keep in peer_settings:
        timings['peer_kept_memory' if keep else 'peer'] = peer(tmp, cases, args.new_tokens, args.repeats, keep)
    if None in timings.values():
      print('HF peer not installed (pip install -e .[bench])', flush=True)
  for prefix, side in timings.items():
    suffix = '' if prefix == 'peer' else '_' + prefix
    for row, (peer_s, peer_tokens, peer_rss) in zip(results, side or []):
      row.update({f'{prefix}_seconds': peer_s, f'{prefix}_tokens': peer_tokens,
                  f'{prefix}_tokens_per_s': peer_tokens / peer_s,
                  f'{prefix}_mfu': row['model_flops'] / peer_s / peak_flops,
                  f'{prefix}_process_peak_rss_mib': peer_rss,
                  f'ratio_ours_over_{prefix}': row['ours_tokens_per_s'] / (peer_tokens / peer_s),
                  f'ratio_at_full_mfu{suffix}': hardware.ratio_at_full_mfu(peer_s, row['model_flops'], peak_flops)})

  print('\n| method | batch | ours tok/s | MFU | peer tok/s | MFU | ours/peer | at 100% MFU '
        '| peer, host memory kept: tok/s | ours/that peer |\n|---|---|---|---|---|---|---|---|---|---|')
  nan = float('nan')
  for r in results:
    print(f"| {r['method']} | {r['batch']} | {r['ours_tokens_per_s']:.1f} | {r['ours_mfu']:.1%} | "
          f"{r.get('peer_tokens_per_s', nan):.1f} | {r.get('peer_mfu', nan):.1%} | "
          f"{r.get('ratio_ours_over_peer', nan):.2f} | {r.get('ratio_at_full_mfu') or nan:.2f} | "
          f"{r.get('peer_kept_memory_tokens_per_s', nan):.1f} | {r.get('ratio_ours_over_peer_kept_memory', nan):.2f} |")
  # Memory: ours per case from XLA's compiled memory plan; the process high-water mark (ours, and the
  # torch child's over all its cases) as an upper bound.
  payload = {'config': dataclasses.asdict(config), 'input_length': args.input_length,
             'new_tokens': args.new_tokens, 'device': str(jax.devices()[0]), 'cpu_count': os.cpu_count(),
             'matmul_peak_flops': peak_flops,
             'ours_process_peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             'results': results}
  print(f"wrote {bench_results.write_json('decode_throughput', payload)}")


if __name__ == '__main__':
  main()

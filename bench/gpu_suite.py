r"""The GPU suite: train and decode throughput of flan_t5_small / base / large in bf16 on one
accelerator, with MFU against the device's datasheet peak and T5X's published figure as reference.

  python bench/gpu_suite.py [--models flan_t5_small,flan_t5_base,flan_t5_large] [--train_batch 32]
                            [--decode_batch 64] [--peak_tflops N]

Train: batch `--train_batch` per device, inputs 512 / targets 128 (the shapes of T5X's Rosetta
figure), Adafactor, bf16 activations with fp32 parameters, the median of `--train_steps` steps
after a warm-up; MFU = XLA's FLOP count of the compiled step / step time / datasheet peak.
Decode: greedy and beam-4 at `--decode_batch`, input 512, `--new_tokens` tokens with EOS out of
reach; MFU from the decode's matmul FLOPs (decode_throughput.model_flops). Reference: T5X's
Rosetta T5-Large finetuning on A100, ~75.8 sequences/s per GPU at 512 + 128 tokens
(REFERENCE_SEQ_PER_S); on another device the reference is also shown scaled by the datasheet
peaks. The datasheet peak (dense bf16) comes from the device kind (DATASHEET_BF16_TFLOPS) or
`--peak_tflops`; on a CPU there is none unless given. Writes bench/results/gpu_suite_<time>.json.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import decode_throughput  # noqa: E402
import hardware  # noqa: E402
import train_throughput  # noqa: E402
from synthetic_training import t5_config  # noqa: E402

from flan_t5x import decoding, network  # noqa: E402

# Dense bf16 tensor-core / MXU peaks from the vendors' datasheets (TFLOP/s), by device-kind substring;
# the first match wins, so the more specific names come first.
DATASHEET_BF16_TFLOPS = (
    ('H100 PCIe', 756.0), ('H100', 989.4), ('H200', 989.4), ('H800', 989.4), ('GH200', 989.4),
    ('B200', 2250.0), ('A100', 312.0), ('A800', 312.0), ('L40S', 362.1), ('L4', 121.0), ('A10G', 70.0),
    ('A10', 125.0), ('TPU v5p', 459.0), ('TPU v5 lite', 197.0), ('TPU v5e', 197.0), ('TPU v4', 275.0),
    ('TPU v6', 918.0),
)
REFERENCE = {'model': 'flan_t5_large', 'device': 'A100', 'seq_per_s': 75.8,
             'source': "T5X's Rosetta (NVIDIA JAX-Toolbox) T5-Large finetuning, 512 + 128 tokens"}


def datasheet_peak_flops(device_kind: str) -> float | None:
  for name, tflops in DATASHEET_BF16_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops * 1e12
  return None


def bench_decode(name: str, dtype: str, batch: int, input_length: int, new_tokens: int, repeats: int,
                 peak: float | None) -> list[dict]:
  config = t5_config(name, dtype)
  module = network.Transformer(config)
  params = decode_throughput.params_without_eos(module)  # every row decodes `new_tokens` tokens
  inputs = np.random.RandomState(0).randint(2, config.vocab_size - 100, size=(batch, input_length)).astype(np.int32)
  inputs[:, -1] = decoding.EOS_ID
  rows = []
  for method, beams in (('greedy', 1), ('beam', 4)):
    cfg = decoding.DecodingConfig(method, beams, alpha=0.6)
    seconds, tokens, peak_bytes = decode_throughput.ours(module, params, inputs, new_tokens, cfg, repeats)
    flops = decode_throughput.model_flops(config, batch, input_length, beams, new_tokens)
    rows.append({'model': name, 'method': f'{method}-{beams}' if beams > 1 else method, 'batch': batch,
                 'seconds': seconds, 'tokens': tokens, 'tokens_per_s': tokens / seconds, 'model_flops': flops,
                 'mfu': flops / seconds / peak if peak else None,
                 'compiled_peak_mib': peak_bytes / 2**20 if peak_bytes is not None else None})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='flan_t5_small,flan_t5_base,flan_t5_large')
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--train_batch', type=int, default=32)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=128)
  parser.add_argument('--train_steps', type=int, default=10)
  parser.add_argument('--decode_batch', type=int, default=64)
  parser.add_argument('--decode_input_length', type=int, default=512)
  parser.add_argument('--new_tokens', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--peak_tflops', type=float, default=None, help='datasheet peak when the device kind is not known')
  args = parser.parse_args()
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  device = jax.devices()[0]
  peak = args.peak_tflops * 1e12 if args.peak_tflops else datasheet_peak_flops(device.device_kind)
  print(f'device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); datasheet bf16 peak '
        + (f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (pass --peak_tflops): MFU not computed'), flush=True)
  reference_peak = datasheet_peak_flops(REFERENCE['device'])
  train_rows, decode_rows = [], []
  print('\n| model | params | train seq/s | tokens/s | MFU | reference seq/s (A100) | ours / reference | '
        'ours / reference scaled by peak |\n|---|---|---|---|---|---|---|---|', flush=True)
  for name in args.models.split(','):
    row = train_throughput.bench_ours(name, args.train_batch, args.inputs, args.targets, args.train_steps, args.dtype)
    row['seq_per_s'] = args.train_batch / row['step_time_s']
    row['mfu'] = row['achieved_flops_per_s'] / peak if peak else None
    if name == REFERENCE['model'] and (args.inputs, args.targets) == (512, 128):
      row['ours_over_reference'] = row['seq_per_s'] / REFERENCE['seq_per_s']
      if peak:
        row['ours_over_reference_scaled_by_peak'] = row['ours_over_reference'] * reference_peak / peak
    train_rows.append(row)
    fmt = lambda v, spec: format(v, spec) if v is not None else '-'
    print(f"| {name} | {row['params'] / 1e6:.0f}M | {row['seq_per_s']:.1f} | {row['tokens_per_s']:.0f} | "
          f"{fmt(row['mfu'], '.1%')} | {REFERENCE['seq_per_s'] if 'ours_over_reference' in row else '-'} | "
          f"{fmt(row.get('ours_over_reference'), '.2f')} | {fmt(row.get('ours_over_reference_scaled_by_peak'), '.2f')} |",
          flush=True)
  print('\n| model | method | batch | tokens/s | MFU |\n|---|---|---|---|---|', flush=True)
  for name in args.models.split(','):
    for row in bench_decode(name, args.dtype, args.decode_batch, args.decode_input_length, args.new_tokens,
                            args.repeats, peak):
      decode_rows.append(row)
      mfu = f"{row['mfu']:.1%}" if row['mfu'] is not None else '-'
      print(f"| {name} | {row['method']} | {row['batch']} | {row['tokens_per_s']:.0f} | {mfu} |", flush=True)
  payload = {'device_kind': device.device_kind, 'platform': device.platform, 'device_count': jax.device_count(),
             'datasheet_peak_flops': peak, 'dtype': args.dtype, 'reference': REFERENCE,
             'train': {'batch': args.train_batch, 'inputs': args.inputs, 'targets': args.targets, 'rows': train_rows},
             'decode': {'batch': args.decode_batch, 'input_length': args.decode_input_length,
                        'new_tokens': args.new_tokens, 'rows': decode_rows}}
  print(f"wrote {bench_results.write_json('gpu_suite', payload)}")


if __name__ == '__main__':
  main()

r"""Train-step and decode time of the engine under XLA:CPU flag sets, each against the default flags.

  python bench/xla_flags.py [--cases train:tiny,train:flan_t5_small,greedy:16] [--flag_sets NAME=FLAGS ...]

Each (case, flag set) runs in its own child process (XLA reads XLA_FLAGS once, when the backend
starts), the default flags first, then each set, then the default again: the peer is the default
flags measured in the same run, before and after, so drift shows. Cases: `train:<model>` (batch 8,
inputs 512 / targets 128, as bench/train_throughput.py), `greedy:<batch>` / `beam:<batch>`
(FLAN-T5-small config, input 128, 32 new tokens, as bench/decode_throughput.py). Values are the
median of `--steps` timed calls after a warm-up. Every child keeps freed host memory, as the jobs do
on CPU hosts (flan_t5x/host_memory.py; --no-keep_freed_host_memory: glibc's defaults in every
child). Writes bench/results/xla_flags_<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import hardware  # noqa: E402

hardware.keep_freed_host_memory_unless_disabled(sys.argv)  # before JAX or TensorFlow start threads

DEFAULT_FLAG_SETS = {
    'ynn_eltwise_reduce': '--xla_cpu_experimental_ynn_fusion_type=individual_dot,eltwise,reduce',
    'no_ynn': '--xla_cpu_experimental_ynn_fusion_type=',
    'onednn': '--xla_cpu_use_onednn=true',
    'concurrency_scheduler': '--xla_cpu_enable_concurrency_optimized_scheduler=true',
    'vector_width_256': '--xla_cpu_prefer_vector_width=256',
}


def _train_case(model_name: str, steps: int) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from synthetic_training import MODEL_DIMS, benchmark_trainer, synthetic_batch, timed_train_steps  # pylint: disable=g-import-not-at-top
  vocab = MODEL_DIMS[model_name][-1]
  trainer = benchmark_trainer(model_name, 8, 512, 128)
  state, metrics, times, cores_busy = timed_train_steps(trainer, trainer.init_state(), synthetic_batch(8, 512, 128, vocab),
                                            steps)
  return {'seconds': float(np.median(times)), 'times': times, 'tokens_per_call': 8 * 640,
          'loss': float(metrics['loss']), 'cores_busy': cores_busy}


def _decode_case(method: str, batch: int, steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from decode_throughput import flan_t5_small, params_without_eos  # pylint: disable=g-import-not-at-top
  from flan_t5x import decoding, network  # pylint: disable=g-import-not-at-top
  module = network.Transformer(flan_t5_small())
  params = params_without_eos(module)  # no EOS: every call decodes the full length
  beams = 4 if method == 'beam' else 1
  fn = decoding.make_predict_fn(module, 32, decoding.DecodingConfig(method, beams, alpha=0.6))
  inputs = np.random.RandomState(0).randint(2, 32000, size=(batch, 128)).astype(np.int32)
  inputs[:, -1] = decoding.EOS_ID
  key = jax.random.PRNGKey(0)
  out = jax.block_until_ready(fn(params, inputs, key))
  times, cpu_s = [], 0.0
  for _ in range(steps):
    tick, cpu_tick = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(params, inputs, key))
    times.append(time.perf_counter() - tick)
    cpu_s += time.process_time() - cpu_tick
  return {'seconds': float(np.median(times)), 'times': times, 'tokens_per_call': batch * 32,
          'cores_busy': cpu_s / sum(times),
          'first_row': np.asarray(out[0])[0, 0, :8].tolist()}


def child(case: str, steps: int) -> dict:
  kind, arg = case.split(':')
  return _train_case(arg, steps) if kind == 'train' else _decode_case(kind, int(arg), steps)


def run_child(case: str, flags: str, steps: int, keep_freed_host_memory: bool) -> dict:
  env = dict(os.environ, XLA_FLAGS=' '.join(f for f in (os.environ.get('XLA_FLAGS', ''), flags) if f))
  command = [sys.executable, __file__, '--child', case, '--steps', str(steps)]
  if not keep_freed_host_memory:
    command.append('--no-keep_freed_host_memory')
  proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    return {'error': proc.stderr[-1500:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cases', default='train:tiny,train:flan_t5_small,greedy:16,beam:16')
  parser.add_argument('--flag_sets', nargs='*', default=None, help='NAME=FLAGS (default: a built-in list)')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  hardware.add_host_memory_arguments(parser, peer=False)
  args = parser.parse_args()
  hardware.check_host_memory_argument(parser, args)
  if args.child:
    print(json.dumps(child(args.child, args.steps)), flush=True)
    return
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  flag_sets = dict(s.split('=', 1) for s in args.flag_sets) if args.flag_sets else DEFAULT_FLAG_SETS
  rows = []
  print('| case | flags | seconds per call | default before / after | default / flags |\n|---|---|---|---|---|')
  for case in args.cases.split(','):
    run = lambda flags: run_child(case, flags, args.steps, args.keep_freed_host_memory)  # pylint: disable=cell-var-from-loop
    before = run('')
    measured = {name: run(flags) for name, flags in flag_sets.items()}
    after = run('')
    default_s = min(before.get('seconds', float('inf')), after.get('seconds', float('inf')))
    for name, result in measured.items():
      row = {'case': case, 'flag_set': name, 'flags': flag_sets[name], 'result': result,
             'default_before': before, 'default_after': after}
      if 'seconds' in result:
        row['speedup_over_default'] = default_s / result['seconds']
        print(f"| {case} | {name} | {result['seconds']:.4f} ({result['cores_busy']:.2f} cores busy) | "
              f"{before.get('seconds', float('nan')):.4f} / {after.get('seconds', float('nan')):.4f} | "
              f"{row['speedup_over_default']:.2f} |", flush=True)
      else:
        print(f"| {case} | {name} | failed: {result['error'].strip().splitlines()[-1][:120]} | | |", flush=True)
      rows.append(row)
  print(f"wrote {bench_results.write_json('xla_flags', {'steps': args.steps, 'rows': rows})}")


if __name__ == '__main__':
  main()

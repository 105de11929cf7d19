r"""Where one train step's time goes: XLA:CPU thunks of a profiled step, summed by flax module and
pass (forward / backward) and by thread.

  python bench/profile_step.py [--model tiny] [--steps 3] [--top 25]

The method of docs/performance.md, as a script: a perfetto trace of `--steps` steps (after a
warm-up), each thunk joined with the optimized HLO's `op_name` metadata, summed per step. The
"threads" column says on how many threads a thunk's events ran; "busy" is the sum of thunk
time per wall second of the step (above 1: thunks overlapped on several cores). Writes JSON to
bench/results/.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import hardware  # noqa: E402

_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name="([^"]*)"', re.M)
_FUSION_CALL = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?calls=%?([\w.\-]+)', re.M)


def _module_of(op_name: str) -> str:
  """'jit(train_step)/transpose(jvp(Transformer))/encoder/layers_0/attention/...' -> pass + module path."""
  kind = 'backward' if 'transpose(' in op_name else 'forward'
  parts = [p for p in op_name.split('/') if p and '(' not in p]
  module = '/'.join(re.sub(r'_\d+$', '_N', p) for p in parts[:4]) or op_name[:40]
  return f'{kind} {module}'


def _hlo_labels(hlo_text: str) -> dict[str, str]:
  labels = {name: _module_of(op) for name, op in _OP_NAME.findall(hlo_text)}
  for name, called in _FUSION_CALL.findall(hlo_text):
    labels.setdefault(name, labels.get(called, 'unlabelled'))
  return labels


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='tiny')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=25)
  args = parser.parse_args()
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  import jax  # pylint: disable=g-import-not-at-top
  from synthetic_training import MODEL_DIMS, benchmark_trainer, synthetic_batch  # pylint: disable=g-import-not-at-top
  vocab = MODEL_DIMS[args.model][-1]
  trainer = benchmark_trainer(args.model, 8, 512, 128)
  state, batch = trainer.init_state(), synthetic_batch(8, 512, 128, vocab)
  compiled = trainer._train_step.lower(  # pylint: disable=protected-access
      state, trainer.frozen_params, trainer.partitioner.shard_batch(batch), jax.random.PRNGKey(0)).compile()
  labels = _hlo_labels(compiled.as_text())
  state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    tick = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = trainer.train_step(state, batch)
      jax.block_until_ready((state, metrics))
    wall_s = (time.perf_counter() - tick) / args.steps
    jax.profiler.stop_trace()
    [trace_path] = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(trace_path) as f:
      events = json.load(f)['traceEvents']
  by_label, threads, by_thunk = collections.defaultdict(float), collections.defaultdict(set), collections.Counter()
  total_us = 0.0
  for event in events:
    name = event.get('name', '')
    base = name.split(':')[0]
    if event.get('ph') != 'X' or base not in labels:
      continue
    label = labels[base]
    by_label[label] += event['dur']
    by_thunk[base] += event['dur']
    threads[label].add(event.get('tid'))
    total_us += event['dur']
  per_step = {k: v / 1e3 / args.steps for k, v in by_label.items()}
  print(f"\n{args.model}: {wall_s * 1e3:.1f} ms per step (wall); thunks {total_us / 1e3 / args.steps:.1f} ms per "
        f"step, busy {total_us / 1e6 / args.steps / wall_s:.2f}\n")
  print('| pass and module | ms per step | share of thunk time | threads |\n|---|---|---|---|')
  for label, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:args.top]:
    print(f'| {label} | {ms:.1f} | {ms * 1e3 * args.steps / total_us:.1%} | {len(threads[label])} |')
  print('\nlongest thunks (ms per step): ' + ', '.join(f'{k} {v / 1e3 / args.steps:.1f}'
                                                        for k, v in by_thunk.most_common(12)))
  path = bench_results.write_json('profile_step', {
      'model': args.model, 'steps': args.steps, 'wall_ms_per_step': wall_s * 1e3,
      'thunk_ms_per_step': total_us / 1e3 / args.steps, 'by_module_ms_per_step': per_step,
      'top_thunks_ms_per_step': {k: v / 1e3 / args.steps for k, v in by_thunk.most_common(50)}})
  print(f'wrote {path}')


if __name__ == '__main__':
  main()

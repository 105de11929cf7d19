r"""Where one train step's (or decode call's) time goes: XLA:CPU thunks of a profiled run, summed by
flax module and pass (forward / backward) and by thread.

  python bench/profile_step.py [--model tiny] [--steps 3] [--top 25]
  python bench/profile_step.py --decode greedy [--batch 16] [--input_length 128] [--new_tokens 32]

The method of docs/performance.md, as a script: a perfetto trace of `--steps` steps (after a
warm-up), each thunk joined with the optimized HLO's `op_name` metadata, summed per step. With
`--decode` the run is a decode call of bench/decode_throughput.py's case, and the thunks that run
once per decoded token (the while loop's body) are also summed per decoder step. Columns:
- "wall": each instant of the step split evenly among the thunks running then, plus the gaps in
  which none runs, given to the plain (Eigen) dot that ended last before them, whose work runs
  after its event ends; "of which untraced" is that gap time. The wall column adds up to the
  step's traced span (bench/thunk_timeline.py says why thunk durations alone do not).
- "thunk time": the events' durations summed, as the profiler reports them.
- "matmul GFLOP/s": the module's dot FLOPs (from the optimized HLO) per second of its wall time.
- "threads": on how many threads its events ran; "busy" is thunk time per wall second.
Writes JSON to bench/results/.
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

import hardware  # noqa: E402  (bench/ is on sys.path when run as a script)

hardware.keep_freed_host_memory_unless_disabled(sys.argv)  # before JAX or TensorFlow start threads

import bench_results  # noqa: E402
import jax  # noqa: E402
import thunk_timeline  # noqa: E402

_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name="([^"]*)"', re.M)


def _module_of(op_name: str) -> str:
  """'jit(train_step)/transpose(jvp(Transformer))/encoder/layers_0/attention/...' -> pass + module path."""
  kind = 'backward' if 'transpose(' in op_name else 'forward'
  names = op_name.split('/')
  if 'while' in names:  # a decode loop's body: once per decoded token
    kind += ' loop'
  parts = [p for p in names if p and '(' not in p and p not in ('while', 'body', 'cond')
           and not p.startswith('Transformer.')]
  module = '/'.join(re.sub(r'_\d+$', '_N', p) for p in parts[:4]) or op_name[:40]
  return f'{kind} {module}'


def _hlo_labels(hlo_text: str) -> dict[str, str]:
  labels = {name: _module_of(op) for name, op in _OP_NAME.findall(hlo_text)}
  for name, called in thunk_timeline.FUSION_CALL.findall(hlo_text):
    labels.setdefault(name, labels.get(called, 'unlabelled'))
  return labels


def _traced(run, calls: int):
  """Runs `run()` `calls` times under the profiler: (thunk events, wall seconds per call)."""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    tick = time.perf_counter()
    for _ in range(calls):
      run()
    wall_s = (time.perf_counter() - tick) / calls
    jax.profiler.stop_trace()
    [trace_path] = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(trace_path) as f:
      return [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X'], wall_s


def _train_step(model_name: str):
  """(optimized HLO text, run one step) for the train benchmarks' trainer, warmed up."""
  from synthetic_training import MODEL_DIMS, benchmark_trainer, synthetic_batch  # pylint: disable=g-import-not-at-top
  vocab = MODEL_DIMS[model_name][-1]
  trainer = benchmark_trainer(model_name, 8, 512, 128)
  state, batch = trainer.init_state(), synthetic_batch(8, 512, 128, vocab)
  compiled = trainer._train_step.lower(  # pylint: disable=protected-access
      state, trainer.frozen_params, trainer.partitioner.shard_batch(batch), jax.random.PRNGKey(0)).compile()
  box = [state]

  def run():
    box[0], metrics = trainer.train_step(box[0], batch)
    jax.block_until_ready((box[0], metrics))
  run()
  return compiled.as_text(), run


def _decode_call(method: str, batch: int, input_length: int, new_tokens: int, config):
  """(optimized HLO text, run one decode call): bench/decode_throughput.py's case, EOS out of reach."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from decode_throughput import params_without_eos  # pylint: disable=g-import-not-at-top
  from flan_t5x import decoding, network  # pylint: disable=g-import-not-at-top
  module = network.Transformer(config)
  params = params_without_eos(module)
  beams = 4 if method == 'beam' else 1
  fn = decoding.make_predict_fn(module, new_tokens, decoding.DecodingConfig(method, beams, alpha=0.6))
  inputs = np.random.RandomState(0).randint(2, config.vocab_size, size=(batch, input_length)).astype(np.int32)
  key = jax.random.PRNGKey(0)
  compiled = fn.lower(params, inputs, key).compile()
  run = lambda: jax.block_until_ready(fn(params, inputs, key))
  run()
  return compiled.as_text(), run


def _wall_by_module(leaves, labels, flops, calls):
  """(wall ms, untraced ms, matmul FLOPs) per pass and module, per call (bench/thunk_timeline.py)."""
  wall, untraced, dots = collections.defaultdict(float), collections.defaultdict(float), collections.defaultdict(float)
  # Plain dot thunks (not fusions) are Eigen's, which may finish after their event ends.
  asynchronous = [e['name'].startswith(('dot.', 'dot_general.')) for e in leaves]
  for event, share, gap in zip(leaves, *thunk_timeline.wall_shares(leaves, asynchronous)):
    base = event['name'].split(':')[0]
    wall[labels[base]] += (share + gap) / 1e3 / calls
    untraced[labels[base]] += gap / 1e3 / calls
    dots[labels[base]] += flops.get(base, 0.0) / calls
  return wall, untraced, dots


def _gflops(flops: float, ms: float) -> str:
  return f'{flops / ms / 1e6:.1f}' if flops and ms else '-'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='tiny')
  parser.add_argument('--decode', choices=('greedy', 'beam'), default=None,
                      help='profile one decode call of the FLAN-T5-small config instead of a train step')
  parser.add_argument('--batch', type=int, default=16, help='decode batch')
  parser.add_argument('--input_length', type=int, default=128, help='decode input length')
  parser.add_argument('--new_tokens', type=int, default=32, help='decoded tokens per call')
  parser.add_argument('--steps', type=int, default=3, help='profiled train steps or decode calls')
  parser.add_argument('--top', type=int, default=25)
  hardware.add_host_memory_arguments(parser, peer=False)
  args = parser.parse_args()
  hardware.check_host_memory_argument(parser, args)
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  if args.decode:
    from decode_throughput import flan_t5_small  # pylint: disable=g-import-not-at-top
    what = f'{args.decode} decode, batch {args.batch}, input {args.input_length}, {args.new_tokens} tokens'
    hlo_text, run = _decode_call(args.decode, args.batch, args.input_length, args.new_tokens, flan_t5_small())
  else:
    what = f'{args.model} train step'
    hlo_text, run = _train_step(args.model)
  labels, flops = _hlo_labels(hlo_text), thunk_timeline.dot_flops(hlo_text)
  loops = thunk_timeline.control_flow(hlo_text)
  events, wall_s = _traced(run, args.steps)
  # Leaf thunks: a loop's thunk spans its body's thunks.
  leaves = [e for e in events if e.get('name', '').split(':')[0] in labels and e['name'].split(':')[0] not in loops]
  wall_by_label, untraced_by_label, flops_by_label = _wall_by_module(leaves, labels, flops, args.steps)
  by_label, threads, by_thunk, calls = (collections.defaultdict(float), collections.defaultdict(set),
                                        collections.Counter(), collections.Counter())
  total_us = 0.0
  for event in leaves:
    base = event['name'].split(':')[0]
    label = labels[base]
    by_label[label] += event['dur']
    by_thunk[base] += event['dur']
    calls[base] += 1
    threads[label].add(event.get('tid'))
    total_us += event['dur']
  per_call = {k: v / 1e3 / args.steps for k, v in by_label.items()}
  print(f"\n{what}: {wall_s * 1e3:.1f} ms per call (wall); thunks {total_us / 1e3 / args.steps:.1f} ms per "
        f"call, busy {total_us / 1e6 / args.steps / wall_s:.2f}\n")
  traced_ms = sum(wall_by_label.values())
  matmul_ms = sum(ms for label, ms in wall_by_label.items() if flops_by_label[label])
  print(f'traced span {traced_ms:.1f} ms per call, of which untraced (asynchronous dots) '
        f'{sum(untraced_by_label.values()):.1f} ms; matmuls {sum(flops_by_label.values()) / 1e9:.1f} GFLOP in '
        f'{matmul_ms:.1f} ms ({_gflops(sum(flops_by_label.values()), matmul_ms)} GFLOP/s)\n')
  print('| pass and module | wall ms per call | of which untraced | thunk time | matmul GFLOP/s | threads |\n'
        '|---|---|---|---|---|---|')
  for label, ms in sorted(wall_by_label.items(), key=lambda kv: -kv[1])[:args.top]:
    print(f'| {label} | {ms:.1f} | {untraced_by_label[label]:.1f} | {per_call.get(label, 0.0):.1f} | '
          f'{_gflops(flops_by_label[label], ms)} | {len(threads[label])} |')
  print('\nlongest thunks (ms per call, runs per call): ' + ', '.join(
      f'{k} {v / 1e3 / args.steps:.1f} ({calls[k] // args.steps})' for k, v in by_thunk.most_common(12)))
  loop = {}
  if args.decode:
    # Thunks of the while loop's body run once per decoded token: their time per decoder step.
    loop_thunks = {k: v for k, v in by_thunk.items() if calls[k] // args.steps >= args.new_tokens - 1}
    loop_us = sum(loop_thunks.values()) / args.steps
    # The body's thunks run once per loop iteration (the loop's condition once more).
    steps_per_call = (collections.Counter(calls[k] for k in loop_thunks).most_common(1)[0][0] / args.steps
                      if loop_thunks else 0)
    loop = {'loop_thunks': len(loop_thunks), 'loop_steps_per_call': steps_per_call,
            'loop_thunk_ms_per_step': loop_us / 1e3 / steps_per_call if steps_per_call else None}
    print(f"\ndecode loop: {len(loop_thunks)} thunks per step, {loop['loop_thunk_ms_per_step']:.2f} ms of thunk "
          f"time per step over {steps_per_call:.0f} steps")
  path = bench_results.write_json('profile_step', {
      'case': what, 'model': None if args.decode else args.model, 'decode': args.decode, 'calls': args.steps,
      'wall_ms_per_call': wall_s * 1e3, 'thunk_ms_per_call': total_us / 1e3 / args.steps,
      'by_module_ms_per_call': per_call, 'by_module_wall_ms_per_call': dict(wall_by_label),
      'by_module_untraced_ms_per_call': dict(untraced_by_label),
      'by_module_matmul_gflop_per_call': {k: v / 1e9 for k, v in flops_by_label.items() if v}, **loop,
      'top_thunks_ms_per_call': {k: v / 1e3 / args.steps for k, v in by_thunk.most_common(50)}})
  print(f'wrote {path}')


if __name__ == '__main__':
  main()

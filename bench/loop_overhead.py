r"""Overhead of the training loop: steps/s of `train.train()` against a bare loop of compiled steps.

  python bench/loop_overhead.py [--steps 40] [--log_period 10] [--repeats 2]

Both run the same model (a small T5.1.1: 4+4 layers, d_model 256, byte vocabulary, fp32) on
batches of demo_mix (8 x 256/64, packed). The bare loop takes those batches from memory and
only calls the compiled train step; `train()` reads its input pipeline, accumulates metrics on
the device, logs every `log_period` steps (TensorBoard, one step late) and keeps its actions
list, with checkpoints and evaluation out of the timed window. train()'s rate is taken from its
logged steps/s after the first log (compilation excluded). Target: ratio >= 0.97.

On a CPU host the input pipeline's threads share the cores with the XLA step (an accelerator host
would run them beside it), so two more figures separate the loop from the pipeline: train() with
the pipeline's first batches cached in memory and repeated (what the loop itself costs), and the
pipeline's own seconds per batch when read alone. Writes JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import hardware  # noqa: E402
import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)

from flan_t5x import checkpoints, data, models, network, optimizers, partitioning, schedules, train  # noqa: E402
from flan_t5x import trainer as trainer_lib  # noqa: E402

LENGTHS = {'inputs': 256, 'targets': 64}
BATCH = 8


def _setup():
  import flan_tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registers demo_mix)
  config = network.T5Config(vocab_size=384, emb_dim=256, num_heads=4, num_encoder_layers=4,
                            num_decoder_layers=4, head_dim=64, mlp_dim=512, dropout_rate=0.0, dtype='float32')
  model = models.EncoderDecoderModel(network.Transformer(config), optimizer_def=optimizers.Adafactor(),
                                     loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  lr = schedules.create_learning_rate_scheduler('constant', 1e-3)
  trainer_cls = lambda **kw: trainer_lib.Trainer(learning_rate_fn=lr, **kw)
  dataset_cfg = data.DatasetConfig('demo_mix', LENGTHS, 'train', BATCH, shuffle=True, pack=True)
  return model, trainer_cls, dataset_cfg, partitioning.PjitPartitioner(devices=jax.devices()[:1])


def bare_loop(steps: int) -> float:
  model, trainer_cls, dataset_cfg, partitioner = _setup()
  trainer = trainer_cls(model=model, partitioner=partitioner, batch_size=BATCH, task_feature_lengths=LENGTHS,
                        seed=0)
  inputs = data.InputIterator(data.get_dataset(dataset_cfg, model.feature_converter(pack=True), seed=0,
                                               num_epochs=None))
  batches = [next(inputs) for _ in range(steps + 1)]
  state = trainer.init_state()
  state, metrics = trainer.train_step(state, batches[0])  # compile
  jax.block_until_ready((state, metrics))
  tick = time.perf_counter()
  for batch in batches[1:]:
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready((state, metrics))
  return steps / (time.perf_counter() - tick)


def train_loop(steps: int, log_period: int) -> float:
  model, trainer_cls, dataset_cfg, partitioner = _setup()
  with tempfile.TemporaryDirectory() as model_dir:
    _, history = train.train(model=model, model_dir=model_dir, train_dataset_cfg=dataset_cfg,
                             checkpoint_cfg=checkpoints.CheckpointConfig(
                                 save=checkpoints.SaveCheckpointConfig(period=10**9)),
                             partitioner=partitioner, trainer_cls=trainer_cls, total_steps=steps + log_period,
                             eval_period=None, random_seed=0, log_period=log_period, use_progress_bar=False)
  timed = history[1:]  # the first log period includes compilation
  seconds = sum(log_period / h['steps_per_sec'] for h in timed)
  return len(timed) * log_period / seconds


@contextlib.contextmanager
def cached_input(num_batches: int):
  """train() reads the first `num_batches` of its pipeline from memory, repeated (bench-only)."""
  original = data.get_dataset
  data.get_dataset = lambda *args, **kwargs: original(*args, **kwargs).take(num_batches).cache().repeat()
  try:
    yield
  finally:
    data.get_dataset = original


def pipeline_seconds_per_batch(num_batches: int) -> float:
  model, _, dataset_cfg, _ = _setup()
  inputs = data.InputIterator(data.get_dataset(dataset_cfg, model.feature_converter(pack=True), seed=0,
                                               num_epochs=None))
  next(inputs)
  tick = time.perf_counter()
  for _ in range(num_batches):
    next(inputs)
  return (time.perf_counter() - tick) / num_batches


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--log_period', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=2)
  args = parser.parse_args()
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  if args.steps % args.log_period:
    parser.error('--steps must be a multiple of --log_period')
  # Best of `repeats`, interleaved: other load on a shared machine only ever slows a run down.
  runs = {'bare': [], 'train': [], 'train_cached': []}
  for _ in range(args.repeats):
    runs['bare'].append(bare_loop(args.steps))
    runs['train'].append(train_loop(args.steps, args.log_period))
    with cached_input(args.steps + args.log_period):
      runs['train_cached'].append(train_loop(args.steps, args.log_period))
  bare, ours, ours_cached = (max(runs[k]) for k in ('bare', 'train', 'train_cached'))
  pipeline_s = pipeline_seconds_per_batch(args.steps)
  ratio, ratio_cached = ours / bare, ours_cached / bare
  print(f'bare loop {bare:.3f} steps/s; train() {ours:.3f} steps/s, ratio {ratio:.3f} (target >= 0.97); '
        f'train() with cached input {ours_cached:.3f} steps/s, ratio {ratio_cached:.3f}; the input pipeline '
        f'alone {pipeline_s * 1e3:.1f} ms/batch ({pipeline_s * bare:.1%} of a bare step)')
  payload = {'device': str(jax.devices()[0]), 'cpu_count': os.cpu_count(), 'load_average': os.getloadavg(),
             'batch_size': BATCH, 'task_feature_lengths': LENGTHS, 'steps': args.steps,
             'log_period': args.log_period, 'bare_steps_per_s': bare, 'train_steps_per_s': ours,
             'ratio_train_over_bare': ratio, 'train_cached_input_steps_per_s': ours_cached,
             'ratio_train_cached_input_over_bare': ratio_cached, 'pipeline_s_per_batch': pipeline_s,
             'all_runs_steps_per_s': runs}
  print(f"wrote {bench_results.write_json('loop_overhead', payload)}")


if __name__ == '__main__':
  main()

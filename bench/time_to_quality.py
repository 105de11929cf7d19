"""Time to quality on DialogSum: flan-t5x vs Hugging Face transformers, same model, data and optimizer.

  .venv/bin/python bench/time_to_quality.py [--budget_minutes 20] [--eval_every_s 120] [--plot curves.png]

Both sides train the same small T5.1.1 (4+4 layers, d_model 256, 4 heads x 64, gated-GELU MLP 1024,
the 32k T5 vocabulary, dropout 0.1, fp32) from the SAME initial weights (ours, exported with
flan_t5x.hf_format) on the `dialogsum_zs` task (instruction-formatted, inputs 512 / targets 128
tokens) read from ../shared/datasets, in the same batch order (a seeded permutation per epoch),
batch 8, Adafactor with T5X's defaults (transformers' Adafactor with the matching settings: beta2 =
1 - t^-0.8, update clipping 1, parameter-scaled, no momentum) at a constant learning rate 1e-3,
cross entropy averaged over target tokens (no z-loss). Each side trains for `budget_minutes` of
training time; evaluation pauses the clock. Every `eval_every_s` training seconds both measure the
validation cross entropy per token on the same `val_examples` validation examples; at the end both
greedy-decode them (128 tokens) and ROUGE is computed here on the detokenized text.

Reported: both curves (training seconds, step, validation loss), the time each side needs to first
reach the target loss (--target_loss, default: the higher of the two final losses, so both reach
it), the ratio of those times, steps per second, and the ROUGE of both at the end of the budget.
The torch side runs in its own process (flan_t5x.hf_peer). Needs ../shared (or --data_dir/--vocab)
and the bench extra. Writes bench/results/time_to_quality_<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import seqio  # noqa: E402

import hardware  # noqa: E402
import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import flan_tasks  # noqa: E402,F401  (registers the tasks)
from flan_tasks import config as flan_config  # noqa: E402
from flan_tasks import metrics as flan_metrics  # noqa: E402
from flan_t5x import decoding, hf_format, hf_peer_client, models, network, optimizers  # noqa: E402
from flan_t5x import partitioning, schedules  # noqa: E402
from flan_t5x import trainer as trainer_lib  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), 'shared')
LENGTHS = {'inputs': 512, 'targets': 128}
FEATURES = ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens')


def model_config(vocab_size: int) -> network.T5Config:
  return network.T5Config(vocab_size=vocab_size, emb_dim=256, num_heads=4, num_encoder_layers=4,
                          num_decoder_layers=4, head_dim=64, mlp_dim=1024, dropout_rate=0.1, dtype='float32')


def _task_dataset(split: str, limit: int | None):
  ds = seqio.get_mixture_or_task('dialogsum_zs').get_dataset(LENGTHS, split=split, shuffle=False, seed=0)
  return ds.take(limit) if limit else ds


def load_split(split: str, limit: int | None = None) -> dict[str, np.ndarray]:
  """Model features (unpacked, padded to LENGTHS) of `dialogsum_zs`."""
  converted = seqio.EncDecFeatureConverter(pack=False)(_task_dataset(split, limit), LENGTHS)
  rows = list(converted.as_numpy_iterator())
  return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in FEATURES}


def target_texts(split: str, limit: int | None = None) -> list[str]:
  """The reference summaries, in `load_split`'s order (for ROUGE)."""
  return [ex['targets_pretokenized'].decode() for ex in _task_dataset(split, limit).as_numpy_iterator()]


def batch_order(num_rows: int, batch: int, steps: int, seed: int) -> np.ndarray:
  """Row indices, `steps` batches long: a fresh seeded permutation per epoch, whole batches only."""
  rng, order = np.random.RandomState(seed), []
  per_epoch = num_rows // batch * batch
  while len(order) < steps * batch:
    order.extend(rng.permutation(num_rows)[:per_epoch].tolist())
  return np.asarray(order[:steps * batch], np.int32)


def train_ours(trainer, state, train, order, val, args) -> tuple[list[dict], object, int, float, float]:
  """Our training loop on the given order; evaluation outside the clock."""
  def val_loss(params) -> float:
    total, count = 0.0, 0.0
    for start in range(0, len(val['encoder_input_tokens']), args.batch):
      metrics = trainer.eval_step(params, {k: v[start:start + args.batch] for k, v in val.items()})
      total += float(metrics['cross_ent_sum'])
      count += float(metrics['num_tokens'])
    return total / max(count, 1.0)

  curve = [{'train_seconds': 0.0, 'step': 0, 'val_loss': val_loss(state.params)}]
  train_seconds, step, next_eval = 0.0, 0, args.eval_every_s
  max_steps = len(order) // args.batch
  while train_seconds < args.budget_minutes * 60 and step < max_steps:
    rows = order[step * args.batch:(step + 1) * args.batch]
    batch = {k: v[rows] for k, v in train.items()}
    tick = time.perf_counter()
    state, metrics = trainer.train_step(state, batch)
    jax.block_until_ready(metrics)
    train_seconds += time.perf_counter() - tick
    step += 1
    if step == 1:
      first_step_seconds = train_seconds  # includes XLA's compilation, which stays on the clock
    if train_seconds >= next_eval:
      curve.append({'train_seconds': train_seconds, 'step': step, 'val_loss': val_loss(state.params),
                    'train_loss': float(metrics['loss'])})
      print(f"ours: step {step}, {train_seconds:.0f} s, val loss {curve[-1]['val_loss']:.3f}", flush=True)
      next_eval += args.eval_every_s
  if curve[-1]['step'] != step:
    curve.append({'train_seconds': train_seconds, 'step': step, 'val_loss': val_loss(state.params)})
  return curve, state, step, train_seconds, first_step_seconds


def decode_texts(tokens_NxT: np.ndarray, vocabulary) -> list[str]:
  return [vocabulary.decode(decoding.strip_after_eos(row)) for row in tokens_NxT]


def time_to_target(curve: list[dict], target: float) -> float | None:
  """Training seconds at the first evaluation whose loss is at or below `target`."""
  return next((point['train_seconds'] for point in curve if point['val_loss'] <= target), None)


def plot_curves(results: dict, path: str) -> str | None:
  """Validation loss against training seconds, both sides, with the target line; None without matplotlib."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  for side, label in (('ours', 'flan-t5x'), ('peer', 'Hugging Face transformers')):
    if results.get(side):
      curve = results[side]['curve'][1:]  # step 0 (10.98 on both) would flatten the plot
      ax.plot([p['train_seconds'] / 60 for p in curve], [p['val_loss'] for p in curve], marker='o',
              label=f"{label} (ROUGE-Lsum {results[side]['rouge']['rougeLsum']:.1f})")
  if results.get('target_loss') is not None:
    ax.axhline(results['target_loss'], color='gray', linestyle='--', linewidth=1, label='target loss')
  ax.set_xlabel('training minutes (evaluation excluded)')
  ax.set_ylabel('DialogSum validation loss per token')
  ax.set_title('Time to quality: same model, init, data order, Adafactor')
  ax.legend()
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
  return path


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--budget_minutes', type=float, default=20.0)
  parser.add_argument('--eval_every_s', type=float, default=120.0)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--learning_rate', type=float, default=1e-3)
  parser.add_argument('--val_examples', type=int, default=96)
  parser.add_argument('--decode_length', type=int, default=128)
  parser.add_argument('--target_loss', type=float, default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--data_dir', default=os.path.join(SHARED, 'datasets'))
  parser.add_argument('--vocab', default=os.path.join(SHARED, 'checkpoints', 't5-spiece', 'spiece.model'))
  parser.add_argument('--no_peer', action='store_true')
  parser.add_argument('--plot', default=None, help='also draw both curves into this PNG')
  parser.add_argument('--plot_from', default=None, help='only draw --plot from an earlier run\'s JSON')
  args = parser.parse_args()
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  if args.plot_from:
    with open(args.plot_from) as f:
      print(f'wrote {plot_curves(json.load(f), args.plot or args.plot_from.replace(".json", ".png"))}')
    return
  for path in (os.path.join(args.data_dir, 'dialogsum'), args.vocab):
    if not os.path.exists(path):
      raise SystemExit(f'time_to_quality: {path} does not exist; it needs DialogSum and the T5 '
                       'SentencePiece model (../shared, or --data_dir and --vocab).')
  flan_config.configure(data_dir=args.data_dir, vocab_path=args.vocab)
  vocabulary = flan_tasks.t5_vocabulary()

  tick = time.perf_counter()
  train = load_split('train')
  val, val_texts = load_split('validation', args.val_examples), target_texts('validation', args.val_examples)
  print(f'data: {len(train["encoder_input_tokens"])} train / {len(val_texts)} validation examples '
        f'({time.perf_counter() - tick:.0f} s)', flush=True)
  # Enough batches for the faster side at up to 50 steps/s: the order never runs out first.
  order = batch_order(len(train['encoder_input_tokens']), args.batch,
                      int(args.budget_minutes * 60 * 50), args.seed)

  config = model_config(32128)  # T5's model vocabulary: the 32100 pieces padded to a multiple of 128
  model = models.EncoderDecoderModel(network.Transformer(config), optimizer_def=optimizers.Adafactor(),
                                     z_loss=0.0, loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  trainer = trainer_lib.Trainer(
      model=model, partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]),
      learning_rate_fn=schedules.create_learning_rate_scheduler('constant', args.learning_rate),
      batch_size=args.batch, task_feature_lengths=LENGTHS, seed=args.seed)
  state = trainer.init_state()
  initial_params = jax.tree.map(np.asarray, models.unbox(state.params))

  results = {'config': dataclasses.asdict(config), 'args': vars(args),
             'device': str(jax.devices()[0]), 'cpu_count': os.cpu_count()}
  curve, state, steps, seconds, first_step_seconds = train_ours(trainer, state, train, order, val, args)
  predict = decoding.make_predict_fn(model.module, args.decode_length)
  params = models.unbox(state.params)
  ours_tokens = np.concatenate([
      np.asarray(predict(params, val['encoder_input_tokens'][i:i + args.batch], jax.random.PRNGKey(0))[0][:, 0])
      for i in range(0, len(val_texts), args.batch)])
  ours_texts = decode_texts(ours_tokens, vocabulary)
  results['ours'] = {'curve': curve, 'steps': steps, 'train_seconds': seconds, 'steps_per_s': steps / seconds,
                     'first_step_seconds_with_compile': first_step_seconds,
                     'rouge': flan_metrics.rouge(val_texts, ours_texts), 'examples': ours_texts[:3]}
  print(f"ours: {steps} steps in {seconds:.0f} s, ROUGE {results['ours']['rouge']}", flush=True)

  peer = None
  if not args.no_peer:
    with tempfile.TemporaryDirectory() as tmp:
      hf_format.save(initial_params, config, tmp)
      arrays = {'order': order, 'train_inputs': train['encoder_input_tokens'],
                'train_decoder_inputs': train['decoder_input_tokens'], 'train_targets': train['decoder_target_tokens'],
                'val_inputs': val['encoder_input_tokens'], 'val_decoder_inputs': val['decoder_input_tokens'],
                'val_targets': val['decoder_target_tokens']}
      request = {'model_dir': tmp, 'lr': args.learning_rate, 'batch_size': args.batch,
                 'budget_s': args.budget_minutes * 60, 'eval_every_s': args.eval_every_s,
                 'decode_length': args.decode_length, 'eval_batch_size': args.batch, 'seed': args.seed,
                 'num_threads': os.cpu_count() or 1}
      try:
        response, outputs = hf_peer_client.call('train-to-quality', request, arrays, timeout=None)
      except hf_peer_client.HFPeerUnavailable:
        print('HF peer not installed (pip install -e .[bench])', flush=True)
      else:
        peer_texts = decode_texts(outputs['val_decoded'], vocabulary)
        peer = {'curve': response['curve'], 'steps': response['steps'], 'train_seconds': response['train_seconds'],
                'steps_per_s': response['steps'] / response['train_seconds'],
                'rouge': flan_metrics.rouge(val_texts, peer_texts), 'examples': peer_texts[:3],
                'framework': f"torch {response['torch']} / transformers {response['transformers']}",
                'num_threads': response['num_threads']}
        print(f"HF peer: {peer['steps']} steps in {peer['train_seconds']:.0f} s, ROUGE {peer['rouge']}", flush=True)
  results['peer'] = peer
  if peer:
    target = args.target_loss
    if target is None:
      target = max(results['ours']['curve'][-1]['val_loss'], peer['curve'][-1]['val_loss'])
    ours_time, peer_time = time_to_target(results['ours']['curve'], target), time_to_target(peer['curve'], target)
    results.update(target_loss=target, ours_seconds_to_target=ours_time, peer_seconds_to_target=peer_time,
                   peer_over_ours_time_ratio=(peer_time / ours_time) if ours_time and peer_time else None,
                   steps_per_s_ratio=results['ours']['steps_per_s'] / peer['steps_per_s'])
    print(f'target val loss {target:.3f}: ours {ours_time} s, peer {peer_time} s; '
          f"peer/ours time {results['peer_over_ours_time_ratio']}", flush=True)
    print('\n| train s | ours val loss | peer val loss |\n|---|---|---|')
    for a, b in zip(results['ours']['curve'], peer['curve']):
      print(f"| {a['train_seconds']:.0f} / {b['train_seconds']:.0f} | {a['val_loss']:.3f} (step {a['step']}) | "
            f"{b['val_loss']:.3f} (step {b['step']}) |")
  print(f"wrote {bench_results.write_json('time_to_quality', results)}")
  if args.plot:
    print(f'wrote {plot_curves(results, args.plot)}')


if __name__ == '__main__':
  main()

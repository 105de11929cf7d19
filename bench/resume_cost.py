r"""Cost of resuming training after N consumed batches: constant, not proportional to N.

  python bench/resume_cost.py [--positions 10,1000,100000] [--mixture flan_mix]

For each N: advance the real input pipeline (flan_mix on ../shared with the T5 vocabulary,
else demo_mix) by N batches in this process (timed: what replaying the consumed batches would
cost), save a checkpoint at step N holding the tiny model, the run state and the input position,
then start a fresh Python process that resumes it with `train.train(total_steps=N+1)` and time
it from process start to the end of that first resumed step. The resume times should stay
within a small constant of each other; the replay times grow with N. Prints both and their
ratios, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
sys.path.insert(0, str(ROOT))

import bench_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import hardware  # noqa: E402

LENGTHS = {'inputs': 128, 'targets': 32}
BATCH = 2


def _configure(mixture: str) -> tuple[str, int]:
  """(mixture actually used, model vocabulary size)."""
  import flan_tasks  # pylint: disable=g-import-not-at-top
  datasets, spiece = SHARED / 'datasets', SHARED / 'checkpoints/t5-spiece/spiece.model'
  if mixture.startswith('flan') and datasets.is_dir() and spiece.is_file():
    flan_tasks.configure(data_dir=str(datasets), vocab_path=str(spiece))
    return mixture, 32128
  if mixture.startswith('flan'):
    print(f'../shared not found: using demo_mix instead of {mixture}', file=sys.stderr)
  return 'demo_mix', 384


def _setup(mixture: str, vocab_size: int):
  """The model, trainer factory and dataset config shared by the writer and the resuming child."""
  import jax  # pylint: disable=g-import-not-at-top
  from flan_t5x import data, models, network, optimizers, partitioning, schedules  # pylint: disable=g-import-not-at-top
  from flan_t5x import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  config = network.T5Config(vocab_size=vocab_size, emb_dim=64, num_heads=2, num_encoder_layers=2,
                            num_decoder_layers=2, head_dim=32, mlp_dim=128, dropout_rate=0.0, dtype='float32')
  model = models.EncoderDecoderModel(network.Transformer(config), optimizer_def=optimizers.Adafactor())
  lr = schedules.create_learning_rate_scheduler('constant', 1e-3)
  trainer_cls = lambda **kw: trainer_lib.Trainer(learning_rate_fn=lr, **kw)
  dataset_cfg = data.DatasetConfig(mixture, LENGTHS, 'train', BATCH, shuffle=True, pack=True)
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  return model, trainer_cls, dataset_cfg, partitioner


def write_checkpoint(model_dir: str, mixture: str, vocab_size: int, position: int) -> float:
  """Saves step `position` with the input advanced `position` batches; returns the replay seconds."""
  from flan_t5x import checkpoints, data  # pylint: disable=g-import-not-at-top
  model, trainer_cls, dataset_cfg, partitioner = _setup(mixture, vocab_size)
  trainer = trainer_cls(model=model, partitioner=partitioner, batch_size=BATCH,
                        task_feature_lengths=LENGTHS, seed=0)
  inputs = data.InputIterator(data.get_dataset(dataset_cfg, model.feature_converter(pack=True), seed=0,
                                               num_epochs=None))
  tick = time.perf_counter()
  inputs.skip(position)
  replay_s = time.perf_counter() - tick
  state = trainer.state_from_params(trainer.init_state().params, position)
  checkpointer = checkpoints.Checkpointer(model_dir, checkpoints.SaveCheckpointConfig(period=1),
                                          trainer.abstract_state)
  checkpointer.save(state, checkpoints.RunState(seed=0, batches_consumed=position), inputs.state())
  checkpointer.close()
  return replay_s


def resume_child(model_dir: str, mixture: str, vocab_size: int, position: int) -> None:
  """Runs in a fresh process: resume the checkpoint and train one step."""
  from flan_t5x import checkpoints, train  # pylint: disable=g-import-not-at-top
  model, trainer_cls, dataset_cfg, partitioner = _setup(mixture, vocab_size)
  step, _ = train.train(model=model, model_dir=model_dir, train_dataset_cfg=dataset_cfg,
                        checkpoint_cfg=checkpoints.CheckpointConfig(
                            save=checkpoints.SaveCheckpointConfig(period=10**9)),
                        partitioner=partitioner, trainer_cls=trainer_cls, total_steps=position + 1,
                        eval_period=None, random_seed=0, log_period=1, use_progress_bar=False)
  if step != position + 1:
    raise RuntimeError(f'resumed run ended at step {step}, expected {position + 1}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--positions', default='10,1000,100000')
  parser.add_argument('--mixture', default='flan_mix')
  parser.add_argument('--child', nargs=4, metavar=('MODEL_DIR', 'MIXTURE', 'VOCAB', 'POSITION'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    model_dir, mixture, vocab, position = args.child
    _configure(mixture)
    resume_child(model_dir, mixture, int(vocab), int(position))
    return
  print(hardware.summary_line(hardware.machine_record()), flush=True)
  mixture, vocab_size = _configure(args.mixture)
  rows = []
  for position in [int(p) for p in args.positions.split(',')]:
    with tempfile.TemporaryDirectory() as model_dir:
      replay_s = write_checkpoint(model_dir, mixture, vocab_size, position)
      tick = time.perf_counter()
      subprocess.run([sys.executable, __file__, '--child', model_dir, mixture, str(vocab_size), str(position)],
                     check=True, capture_output=True, text=True)
      resume_s = time.perf_counter() - tick
      input_bytes = sum(f.stat().st_size for f in pathlib.Path(model_dir).glob(f'checkpoint_{position}/input/**/*')
                        if f.is_file())
    rows.append({'consumed_batches': position, 'resume_s': resume_s, 'replay_s': replay_s,
                 'input_state_bytes': input_bytes})
    print(json.dumps(rows[-1]), flush=True)
  base = rows[0]['resume_s']
  print(f'\nmixture {mixture}, batch {BATCH}, lengths {LENGTHS}')
  print('| consumed batches | resume: process start to first step (s) | ratio to first | '
        'replaying them instead (s) |\n|---|---|---|---|')
  for row in rows:
    row['resume_ratio_to_first'] = row['resume_s'] / base
    print(f"| {row['consumed_batches']:,} | {row['resume_s']:.1f} | {row['resume_ratio_to_first']:.2f} | "
          f"{row['replay_s']:.1f} |")
  payload = {'mixture': mixture, 'batch_size': BATCH, 'task_feature_lengths': LENGTHS, 'rows': rows,
             'max_resume_ratio': max(r['resume_ratio_to_first'] for r in rows)}
  print(f"wrote {bench_results.write_json('resume_cost', payload)}")


if __name__ == '__main__':
  main()

"""What the training benchmarks share: model dimensions, a fixed synthetic batch, timed steps."""
import time

import numpy as np

MODEL_DIMS = {  # emb, heads, layers, head_dim, mlp, vocab
    'tiny': (32, 2, 2, 16, 64, 384),
    'flan_t5_small': (512, 6, 8, 64, 1024, 32128),
    'flan_t5_base': (768, 12, 12, 64, 2048, 32128),
    'flan_t5_large': (1024, 16, 24, 64, 2816, 32128),
}


def t5_config(name: str, dtype: str = 'float32'):
  """The T5.1.1 configuration of MODEL_DIMS[name], without dropout."""
  from flan_t5x import network  # pylint: disable=g-import-not-at-top  (callers keep JAX out of their parent process)
  emb, heads, layers, head_dim, mlp, vocab = MODEL_DIMS[name]
  return network.T5Config(vocab_size=vocab, emb_dim=emb, num_heads=heads, num_encoder_layers=layers,
                          num_decoder_layers=layers, head_dim=head_dim, mlp_dim=mlp, dropout_rate=0.0,
                          dtype=dtype)


def benchmark_trainer(name: str, batch: int, inputs: int, targets: int, dtype: str = 'float32',
                      **model_options):
  """The train benchmarks' trainer: MODEL_DIMS[name], Adafactor at a constant 1e-3, one device.
  `model_options` go to EncoderDecoderModel (e.g. loss_vocab_chunk_width=None: the full-logits loss)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flan_t5x import models, network, optimizers, partitioning, schedules  # pylint: disable=g-import-not-at-top
  from flan_t5x import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  model = models.EncoderDecoderModel(network.Transformer(t5_config(name, dtype)),
                                     optimizer_def=optimizers.Adafactor(),
                                     loss_normalizing_factor='NUM_REAL_TARGET_TOKENS', **model_options)
  return trainer_lib.Trainer(
      model=model, partitioner=partitioning.PjitPartitioner(devices=jax.devices()[:1]),
      learning_rate_fn=schedules.create_learning_rate_scheduler('constant', 1e-3), batch_size=batch,
      task_feature_lengths={'inputs': inputs, 'targets': targets})


def model_step_flops(name: str, batch: int, inputs: int, targets: int, dtype: str = 'float32') -> float:
  """FLOPs of one train step of the model itself, MFU's numerator: XLA's count for the step with the
  full-logits loss. The step that runs computes the loss in vocabulary chunks inside a while loop, and
  XLA's cost analysis counts a loop's body once (8 chunks: 799 instead of 884 GFLOP for
  flan_t5_small); the chunked loss's recomputed logits are not the model's FLOPs either way."""
  import jax  # pylint: disable=g-import-not-at-top
  trainer = benchmark_trainer(name, batch, inputs, targets, dtype, loss_vocab_chunk_width=None)
  state = jax.eval_shape(trainer.init_state)
  local = synthetic_batch(batch, inputs, targets, MODEL_DIMS[name][-1])
  sharded = trainer.partitioner.shard_batch(local)
  lowered = trainer._train_step.lower(state, trainer.frozen_params, sharded, jax.random.PRNGKey(0))  # pylint: disable=protected-access
  return float(cost_analysis(lowered)['flops'])


def cost_analysis(stage) -> dict:
  """XLA's cost analysis of a lowered or compiled computation as one dict (some jax versions return a
  list with one dict per device program)."""
  cost = stage.cost_analysis()
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def synthetic_batch(batch: int, inputs: int, targets: int, vocab: int) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  dec_targets = rng.randint(2, vocab, size=(batch, targets)).astype(np.int32)
  dec_inputs = np.concatenate([np.zeros((batch, 1), np.int32), dec_targets[:, :-1]], axis=1)
  return {'encoder_input_tokens': rng.randint(2, vocab, size=(batch, inputs)).astype(np.int32),
          'decoder_input_tokens': dec_inputs, 'decoder_target_tokens': dec_targets,
          'decoder_loss_weights': np.ones((batch, targets), np.float32)}


def timed_train_steps(trainer, state, local_batch: dict, steps: int):
  """One warm-up step, then `steps` timed ones on the same batch: (state, last metrics, seconds per step,
  cores busy = CPU seconds of all threads per wall second over the timed steps)."""
  import jax  # pylint: disable=g-import-not-at-top  (callers keep JAX out of their parent process)
  state, metrics = trainer.train_step(state, local_batch)
  jax.block_until_ready(metrics)
  times, cpu_s = [], 0.0
  for _ in range(steps):
    tick, cpu_tick = time.perf_counter(), time.process_time()
    state, metrics = trainer.train_step(state, local_batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - tick)
    cpu_s += time.process_time() - cpu_tick
  return state, metrics, times, cpu_s / sum(times)

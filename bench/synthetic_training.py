"""What the training benchmarks share: model dimensions, a fixed synthetic batch, timed steps."""
import time

import numpy as np

MODEL_DIMS = {  # emb, heads, layers, head_dim, mlp, vocab
    'tiny': (32, 2, 2, 16, 64, 384),
    'flan_t5_small': (512, 6, 8, 64, 1024, 32128),
    'flan_t5_base': (768, 12, 12, 64, 2048, 32128),
    'flan_t5_large': (1024, 16, 24, 64, 2816, 32128),
}


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

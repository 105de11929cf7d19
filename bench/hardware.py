"""What the benchmarks measure about the machine and a compiled program: matmul peak, memory."""
import time


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
  """The best fp32 `size` x `size` matmul rate (FLOP/s) on JAX's default device: MFU's denominator."""
  import jax  # pylint: disable=g-import-not-at-top  (callers keep JAX out of their parent process)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jnp.ones((size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - tick)
  return 2 * size ** 3 / best


def compiled_peak_bytes(compiled) -> int | None:
  """XLA's memory plan of a compiled program: arguments + outputs + temporaries - donated aliases."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
             - stats.alias_size_in_bytes)

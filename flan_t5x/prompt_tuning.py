"""Prompt tuning (Lester et al. 2021; T5X's prompt-tuning project): N learned vectors before the input.

The prompt `prompt/prompt` `(N, embed)` is prepended to the embedded encoder input of every example.
As in T5X's prompt tuning, the prompt positions count as real tokens: the encoder mask and the
decoder's cross-attention mask see N always-valid positions first (a "fake prompt" of ones prepended
to the input tokens when masks are built), and relative positions run over prompt + input, so an
input token at index i sits at position N + i. The encoder output keeps the prompt positions.
Packed examples (segment ids) are refused: a packed row has several examples and one prompt.

Initialisation (`init`): 'vocab' samples N rows of the embedding table among its first
`vocab_sample_size` tokens (T5X's from_sample_of_embeddings, population 5000); 'random' draws
U(-0.5, 0.5) (the paper's random-uniform init).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

PROMPT_AXIS = 'prompt_length'
INITS = ('vocab', 'random')


@dataclasses.dataclass(frozen=True)
class PromptTuningConfig:
  length: int = 100
  init: str = 'vocab'
  vocab_sample_size: int = 5000
  random_range: float = 0.5

  def __post_init__(self):
    if self.length < 1:
      raise ValueError(f'PromptTuningConfig.length must be at least 1, got {self.length}')
    if self.init not in INITS:
      raise ValueError(f'PromptTuningConfig.init={self.init!r}; expected one of {INITS}')
    if self.vocab_sample_size < 1:
      raise ValueError(f'PromptTuningConfig.vocab_sample_size must be positive, got {self.vocab_sample_size}')

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def init_prompt(key: jax.Array, config: PromptTuningConfig, embedding_VxE: jax.Array) -> jax.Array:
  """(N, E) float32 initial prompt from the (pretrained) embedding table or at random."""
  emb_dim = embedding_VxE.shape[-1]
  if config.init == 'random':
    return jax.random.uniform(key, (config.length, emb_dim), jnp.float32, -config.random_range,
                              config.random_range)
  population = min(config.vocab_sample_size, embedding_VxE.shape[0])
  # Without replacement when the population allows, as T5X samples distinct rows.
  ids_N = jax.random.choice(key, population, (config.length,), replace=config.length > population)
  return jnp.take(embedding_VxE.astype(jnp.float32), ids_N, axis=0)


def with_prompt_tokens(tokens_BxL: jax.Array, config: PromptTuningConfig | None) -> jax.Array:
  """Input tokens with N ones before them: what masks are built from when a prompt is prepended."""
  if config is None:
    return tokens_BxL
  ones_BxN = jnp.ones((tokens_BxL.shape[0], config.length), tokens_BxL.dtype)
  return jnp.concatenate([ones_BxN, tokens_BxL], axis=1)


def prepend(prompt_NxE: jax.Array, embedded_BxLxE: jax.Array) -> jax.Array:
  batch = embedded_BxLxE.shape[0]
  prompt_BxNxE = jnp.broadcast_to(prompt_NxE.astype(embedded_BxLxE.dtype)[None],
                                  (batch,) + prompt_NxE.shape)
  return jnp.concatenate([prompt_BxNxE, embedded_BxLxE], axis=1)

"""A hidden gold reward on (prompt, response) token arrays, and a Bradley-Terry labeller.

Gold reward (pure JAX, usable inside ``jit``), for a response ``y`` with mask ``m`` and
``L = number of content tokens in y`` (EOS and other special ids are not content)::

  r(x, y) = sum_v w_v * count_v(y)                        # hidden linear score of counts
            + overlap_weight * (# content tokens of y that occur in x) / max(L, 1)
            - length_weight * |L - target_length| / target_length

``w`` [V] is drawn once from ``N(0, 1 / target_length)`` with the special ids at 0. A policy
moves r by emitting more high-``w`` tokens, copying prompt tokens, and stopping near
``target_length``.

Bradley-Terry labeller: ``P(first preferred) = sigmoid(beta * (r_first - r_second))``.
``beta = inf`` is deterministic (the higher reward wins; an exact tie is a fair coin),
``beta = 0`` is a fair coin for every pair.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.data.synthetic_source import NUM_SPECIAL


@flax.struct.dataclass
class GoldReward:
  """Callable pytree: ``reward(prompt_tokens [B, P], response_tokens [B, T],
  response_mask [B, T], prompt_mask=None) -> [B]`` float32."""

  token_weights: jax.Array  # [V]
  overlap_weight: float
  length_weight: float
  target_length: float

  def __call__(self, prompt_tokens, response_tokens, response_mask, prompt_mask=None):
    return gold_reward(self, prompt_tokens, response_tokens, response_mask, prompt_mask)


def make_gold_reward(vocab_size: int, seed: int = 0, overlap_weight: float = 1.0,
                     length_weight: float = 1.0, target_length: float = 8.0) -> GoldReward:
  rng = np.random.default_rng([seed, 1])
  weights = rng.standard_normal(vocab_size) / np.sqrt(target_length)
  weights[:NUM_SPECIAL] = 0.0
  return GoldReward(token_weights=jnp.asarray(weights, jnp.float32),
                    overlap_weight=float(overlap_weight), length_weight=float(length_weight),
                    target_length=float(target_length))


def _counts(tokens, mask, vocab_size):
  """Per-row token counts [B, V] of the masked positions."""
  rows = jnp.broadcast_to(jnp.arange(tokens.shape[0])[:, None], tokens.shape)
  return jnp.zeros((tokens.shape[0], vocab_size), jnp.float32).at[rows, tokens].add(
      mask.astype(jnp.float32))


def gold_reward(reward: GoldReward, prompt_tokens, response_tokens, response_mask,
                prompt_mask=None):
  """The gold reward [B] (formula in the module docstring).

  Args:
    prompt_tokens: [B, P] either padding side.
    response_tokens: [B, T].
    response_mask: [B, T] 1 on response tokens (EOS included; it weighs nothing).
    prompt_mask: [B, P] 1 on prompt tokens; default: the prompt's content ids (pad and BOS
      are reserved ids in the synthetic language, never content).
  """
  vocab_size = reward.token_weights.shape[0]
  if prompt_mask is None:
    prompt_mask = prompt_tokens >= NUM_SPECIAL
  content = (response_mask > 0) & (response_tokens >= NUM_SPECIAL)  # [B, T]
  counts = _counts(response_tokens, content, vocab_size)  # [B, V]
  prompt_counts = _counts(prompt_tokens, (prompt_mask > 0) & (prompt_tokens >= NUM_SPECIAL),
                          vocab_size)  # [B, V]
  length = counts.sum(axis=1)  # [B]
  linear = counts @ reward.token_weights  # [B]
  overlap = (counts * (prompt_counts > 0)).sum(axis=1) / jnp.maximum(length, 1.0)  # [B]
  length_term = jnp.abs(length - reward.target_length) / reward.target_length  # [B]
  return linear + reward.overlap_weight * overlap - reward.length_weight * length_term


def bradley_terry_probability(rewards_first, rewards_second, beta):
  """``P(first preferred)`` [B]; ``beta = inf`` gives 1, 0 or 0.5 (tie)."""
  difference = jnp.asarray(rewards_first, jnp.float32) - jnp.asarray(rewards_second,
                                                                     jnp.float32)
  logits = jnp.where(difference == 0, 0.0, beta * difference)
  return jax.nn.sigmoid(logits)


def bradley_terry_labels(key, rewards_first, rewards_second, beta):
  """Sample preferences: True where the first response is preferred [B] bool."""
  probability = bradley_terry_probability(rewards_first, rewards_second, beta)
  return jax.random.uniform(key, probability.shape) < probability

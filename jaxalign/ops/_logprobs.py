"""Token and sequence log-probs, and entropies, from logits.

Shapes: B batch, T sequence, V vocab. Log-probs are computed in float32 (``log_softmax`` then
gather) whatever the logits' dtype. The next-token shift follows CONVENTIONS.md: the log-prob
of token ``t`` comes from the logits at ``t - 1``, so a response's first token is scored from
the prompt's last position and a ``loss_mask`` over the same ``tokens`` columns lines up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.ops._dtypes import upcast
from jaxalign.ops._masked import masked_sum


def _log_softmax(logits: jax.Array, temperature: float) -> jax.Array:
  return jax.nn.log_softmax(upcast(logits) / temperature, axis=-1)


def _prepend_zero_column(scored: jax.Array) -> jax.Array:
  """``[B, T - 1]`` scores of tokens 1..T-1 -> ``[B, T]`` with 0 for token 0."""
  return jnp.pad(scored, ((0, 0), (1, 0)))


def token_logprobs(logits: jax.Array, tokens: jax.Array, temperature: float = 1.0) -> jax.Array:
  """``log softmax(logits / temperature)[tokens]`` at the same position, in float32.

  Args:
    logits: ``[B, T, V]``.
    tokens: ``[B, T]`` integer ids.
    temperature: divides the logits first (the policy log-prob is at 1.0 unless a config says
      otherwise; PPO's ratio uses the temperature that sampled the rollout).

  Returns:
    ``[B, T]`` log-probs (no shift; see ``shifted_token_logprobs``).
  """
  log_probs = _log_softmax(logits, temperature)  # [B, T, V]
  return jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def shifted_token_logprobs(logits: jax.Array, tokens: jax.Array,
                           temperature: float = 1.0) -> jax.Array:
  """Log-prob of ``tokens[:, t]`` under the logits at ``t - 1``; column 0 gets 0.

  ``logits[B, T, V]`` is the model's output on ``tokens[B, T]``; the result ``[B, T]`` lines
  up with masks over the ``tokens`` columns (the prompt's first token is never scored).
  """
  return _prepend_zero_column(token_logprobs(logits[:, :-1], tokens[:, 1:], temperature))


def sequence_logprobs(token_logps: jax.Array, mask: jax.Array, average: bool = False) -> jax.Array:
  """Sequence log-prob ``sum_t mask_t * logp_t``, or its length-normalised mean.

  ``average=True`` divides by the number of masked tokens, floored at 1 (SimPO, ORPO and
  TRL's IPO take this variant). ``token_logps, mask [B, T] -> [B]``.
  """
  total = masked_sum(token_logps, mask, axis=-1)  # [B]
  if not average:
    return total
  return total / jnp.maximum(upcast(mask).sum(axis=-1), 1.0)


def entropy_from_logits(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Entropy ``H = -sum_v p_v log p_v`` of ``softmax(logits / temperature)``, in float32.

  ``[..., V] -> [...]``. Finite for logits of any magnitude (0 * log 0 is never formed: a
  vanishing probability multiplies a finite log-prob).
  """
  log_probs = _log_softmax(logits, temperature)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def shifted_entropy_from_logits(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Entropy of the distribution that chose ``tokens[:, t]`` (logits at ``t - 1``).  # [B, T]"""
  return _prepend_zero_column(entropy_from_logits(logits[:, :-1], temperature))


def log1mexp(log_p: jax.Array, max_log_p: float = -1e-6) -> jax.Array:
  """``log(1 - exp(log_p))``, stable on both sides of ``-log 2`` (Maechler 2012).

  ``log_p`` is clamped to ``<= max_log_p`` first: at ``log_p = 0`` the answer is ``-inf`` and
  its gradient infinite, which ORPO's odds would turn into NaN.
  """
  log_p = jnp.minimum(upcast(log_p), max_log_p)
  return jnp.where(log_p < -0.6931471805599453, jnp.log1p(-jnp.exp(log_p)),
                   jnp.log(-jnp.expm1(log_p)))

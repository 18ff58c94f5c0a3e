"""Logit transforms of the sampling distribution: temperature, top-k, top-p.

Applied in the order Hugging Face applies them (temperature, then top-k, then top-p), so the
same settings define the same distribution. Removed tokens get -inf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_temperature(logits: jax.Array, temperature) -> jax.Array:
  """``logits / T`` in float32 (T > 0; T = 0 is greedy and handled by the caller)."""
  return logits.astype(jnp.float32) / temperature


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits of each row ([B, V]); k = 0 keeps all."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [B, 1]
  return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p) -> jax.Array:
  """Keeps the smallest set of most likely tokens whose probability reaches ``p`` (nucleus).

  logits: [B, V]; returns [B, V] with removed tokens at -inf. A token is kept when the
  probability mass strictly before it (in descending order) is below ``p``; the most likely
  token is always kept. Ties: every token whose logit equals the smallest kept logit is kept,
  so the kept set never depends on how a sort orders equal logits (probs [0.4, 0.2, 0.2, 0.2]
  at p = 0.5 keep all four). transformers' ``TopPLogitsWarper`` cuts the sorted row at a
  position instead and keeps only as many tied tokens as the mass needs (two of the four
  here, the 0.2 chosen by sort order). Without exact ties the two sets are equal.
  """
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]  # [B, V] descending
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = mass_before < p
  # The smallest kept logit is the threshold; ties with it are kept too.
  threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def sampling_logits(logits: jax.Array, temperature, top_k: int, top_p, use_top_p: bool):
  """The logits of the distribution actually sampled from (float32, [B, V])."""
  logits = top_k_filter(apply_temperature(logits, temperature), top_k)
  return top_p_filter(logits, top_p) if use_top_p else logits

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


def truncated_logprobs(logits: jax.Array, tokens: jax.Array, kept_counts: jax.Array,
                       temperature=1.0, suppress_tokens: tuple[int, ...] = ()) -> jax.Array:
  """Log-probs ``[..., T]`` of ``tokens`` under softmax(logits / T) restricted to the
  ``kept_counts`` largest tempered logits of each position (the sampler's support).

  ``logits [..., T, V]``, ``tokens [..., T]``, ``kept_counts [..., T]`` from
  ``SampleOutput.kept_counts``. The support is every token whose tempered logit is at least
  the ``kept_counts``-th largest (ties kept, as the sampler's top-k / top-p keep them), minus
  ``suppress_tokens``, plus the token itself (so a sampled token at the boundary of a
  slightly different logit vector, e.g. bf16 cache vs full pass, never scores -inf). A count
  of 0 (padding) or of the whole vocabulary gives the plain tempered log-prob. The support is
  chosen without a gradient; the log-prob is differentiable in the logits.
  """
  tempered = logits.astype(jnp.float32) / temperature  # [..., T, V]
  if suppress_tokens:
    tempered = tempered.at[..., jnp.asarray(suppress_tokens)].set(-jnp.inf)
  V = tempered.shape[-1]
  descending = jnp.sort(jax.lax.stop_gradient(tempered), axis=-1)[..., ::-1]
  count = jnp.clip(kept_counts, 1, V)
  threshold = jnp.take_along_axis(descending, (count - 1)[..., None], axis=-1)  # [..., T, 1]
  target = jax.nn.one_hot(tokens, V, dtype=bool)
  keep = (tempered >= threshold) | target
  keep = jnp.where((kept_counts == 0)[..., None], True, keep)
  if suppress_tokens:
    keep = keep & (jnp.isfinite(tempered) | target)
  masked = jnp.where(keep, tempered, -jnp.inf)
  picked = jnp.take_along_axis(tempered, tokens[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(masked, axis=-1)

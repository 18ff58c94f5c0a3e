"""Masked reductions: sums, means, variances and whitening.

CONVENTIONS.md: every masked mean is ``sum(x * mask) / max(sum(mask), 1)``. When a batch is
split over micro-batches or devices, pass the global count as ``denominator`` so that the
pieces add up to the number the whole batch would give. Positions where ``mask == 0`` never
contribute, even if ``x`` holds inf or NaN there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.ops._dtypes import upcast


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  """``x * mask`` with exact zeros where ``mask == 0`` (garbage in padding stays out)."""
  x = upcast(x)
  mask = jnp.broadcast_to(upcast(mask).astype(x.dtype), x.shape)
  return jnp.where(mask != 0, x * mask, 0.0)


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """``sum(x * mask)`` over ``axis`` (all axes by default)."""
  return jnp.sum(_masked(x, mask), axis=axis)


def masked_count(mask: jax.Array, axis=None) -> jax.Array:
  """``sum(mask)`` as a float."""
  return jnp.sum(upcast(mask), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, denominator=None, axis=None) -> jax.Array:
  """``sum(x * mask) / max(sum(mask), 1)``, or ``sum(x * mask) / denominator`` if given.

  Args:
    x: values, any shape.
    mask: same shape as ``x`` (or broadcastable); 0/1 or non-negative weights.
    denominator: the global count (e.g. tokens across all micro-batches); used as is.
    axis: axes to reduce; all by default.
  """
  total = masked_sum(x, mask, axis=axis)
  if denominator is None:
    denominator = jnp.maximum(masked_count(jnp.broadcast_to(mask, jnp.shape(x)), axis=axis), 1.0)
  return total / upcast(denominator).astype(total.dtype)


def masked_var(x: jax.Array, mask: jax.Array, unbiased: bool = True) -> jax.Array:
  """Variance of the masked entries, ``masked_mean((x - mean)^2)``.

  ``unbiased=True`` applies Bessel's correction ``n / (n - 1)`` (as TRL's ``masked_var``),
  skipped when ``n <= 1``. Whitening statistics belong to the whole rollout batch: compute
  them before splitting it into micro-batches.
  """
  mean = masked_mean(x, mask)
  variance = masked_mean(jnp.square(upcast(x) - mean), mask)
  if not unbiased:
    return variance
  count = masked_count(jnp.broadcast_to(mask, jnp.shape(x)))
  return variance * jnp.where(count > 1, count / jnp.maximum(count - 1, 1.0), 1.0)


def masked_whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True,
                  eps: float = 1e-8) -> jax.Array:
  """``(x - mean) / sqrt(var + eps)`` over the masked entries; 0 where ``mask == 0``.

  ``shift_mean=False`` adds the mean back (only the scale changes), as for PPO rewards.
  """
  x = upcast(x)
  mean = masked_mean(x, mask)
  whitened = (x - mean) * jax.lax.rsqrt(masked_var(x, mask) + eps)
  if not shift_mean:
    whitened = whitened + mean
  return _masked(whitened, upcast(mask) != 0)


def last_true_index(mask: jax.Array) -> jax.Array:
  """Index of the last nonzero entry of each row of ``mask [B, T]`` (0 for an empty row).  # [B]"""
  T = mask.shape[-1]
  from_end = jnp.argmax(mask[..., ::-1] != 0, axis=-1)
  return jnp.where((mask != 0).any(axis=-1), T - 1 - from_end, 0).astype(jnp.int32)

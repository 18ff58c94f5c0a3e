"""Dtype promotion shared by the ops and the losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def upcast(x) -> jax.Array:
  """``x`` as an array of at least float32: bf16/f16/ints/bools -> f32, f64 stays f64.

  Log-probs, reductions and losses run in float32 whatever the weights' dtype (CONVENTIONS);
  float64 passes through so that gradient checks can run with ``jax_enable_x64``.
  """
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))

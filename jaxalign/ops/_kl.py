"""Per-token estimators of ``KL(pi || pi_ref)`` from samples ``y ~ pi``.

J. Schulman, "Approximating KL Divergence" (2020, http://joschu.net/blog/kl-approx.html).
With the log-ratio ``log r = ref_logp - logp`` of a sampled token:

- ``k1 = -log r = logp - ref_logp``: unbiased, high variance, can be negative;
- ``k2 = 0.5 (log r)^2``: biased, low variance, non-negative;
- ``k3 = (r - 1) - log r``: unbiased, low variance, non-negative.

All are elementwise; inputs of any shape, computed in at least float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.ops._dtypes import upcast


def kl_k1(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  """``k1 = logp - ref_logp``."""
  return upcast(logps) - upcast(ref_logps)


def kl_k2(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  """``k2 = 0.5 (logp - ref_logp)^2``."""
  return 0.5 * jnp.square(upcast(logps) - upcast(ref_logps))


def kl_k3(logps: jax.Array, ref_logps: jax.Array, clip: float | None = 20.0) -> jax.Array:
  """``k3 = exp(ref_logp - logp) - 1 - (ref_logp - logp)``.

  ``clip`` bounds ``ref_logp - logp`` to ``[-clip, clip]`` before the exponential (as verl
  does), so a log-prob gap of 1e3 gives a large finite value instead of inf; ``None`` turns
  the guard off.
  """
  log_ratio = upcast(ref_logps) - upcast(logps)
  if clip is not None:
    log_ratio = jnp.clip(log_ratio, -clip, clip)
  return jnp.expm1(log_ratio) - log_ratio

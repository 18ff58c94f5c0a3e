"""PPO's per-token losses: the clipped surrogate, the clipped value loss, the entropy bonus.

Arrays are ``[B, T]`` over the ``tokens`` columns, aligned like ``shifted_token_logprobs``:
entry ``t`` belongs to the decision that produced token ``t``; ``mask`` marks response tokens.
Each loss is a masked token mean ``sum(x * mask) / max(sum(mask), 1)`` (or ``/ denominator``,
the global token count, when a batch is split into micro-batches).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.losses._common import Metrics, denominator_counts, finish_metrics
from jaxalign.ops import masked_mean, upcast

_MAX_LOG_RATIO = 20.0  # e^20 ~ 5e8: far outside any trust region, still finite


@denominator_counts("mask")
def ppo_policy_loss(logps, old_logps, advantages, mask, *, clip_eps: float = 0.2,
                    dual_clip: float | None = None,
                    denominator=None) -> tuple[jax.Array, Metrics]:
  """PPO's clipped surrogate, as a loss to minimise.

  Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), Eq. 7:

    rho_t = exp(logp_t - old_logp_t)
    L_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))

  ``dual_clip = c > 1`` (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep
  RL", arXiv 1912.09729) also bounds the loss of negative advantages: ``min(L_t, -c A_t)``
  where ``A_t < 0``. ``old_logps`` and ``advantages`` are constants (``stop_gradient``). The log
  ratio is clipped to +-20 before the exponential so a log-prob gap of 1e3 stays finite.

  Args:
    logps, old_logps, advantages, mask: ``[B, T]``.
    clip_eps: epsilon of the clip. dual_clip: ``c`` or ``None``.
    denominator: global number of response tokens.

  Returns:
    ``(loss, metrics)``: ``policy_loss``, ``clip_fraction`` (share of tokens where the clipped
    term is the active one, as TRL's ``clipfrac``), ``approx_kl`` (``0.5 (log rho)^2``, TRL's
    ``approxkl``), ``ratio_mean``, and ``dual_clip_fraction`` when dual clipping.
  """
  logps = upcast(logps)
  old_logps = jax.lax.stop_gradient(upcast(old_logps))
  advantages = jax.lax.stop_gradient(upcast(advantages))
  log_ratio = jnp.clip(logps - old_logps, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # [B, T]
  ratio = jnp.exp(log_ratio)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  per_token = jnp.maximum(unclipped, clipped)
  mean = lambda x: masked_mean(x, mask, denominator)
  metrics = {"clip_fraction": mean((clipped > unclipped).astype(ratio.dtype)),
             "approx_kl": mean(0.5 * jnp.square(log_ratio)),
             "ratio_mean": mean(ratio)}
  if dual_clip is not None:
    bound = -dual_clip * advantages
    dual_active = (advantages < 0) & (per_token > bound)
    per_token = jnp.where(dual_active, bound, per_token)
    metrics["dual_clip_fraction"] = mean(dual_active.astype(ratio.dtype))
  loss = mean(per_token)
  metrics["policy_loss"] = loss
  return loss, finish_metrics(metrics)


@denominator_counts("mask")
def ppo_value_loss(values, old_values, returns, mask, *, clip_eps: float | None = 0.2,
                   denominator=None) -> tuple[jax.Array, Metrics]:
  """Clipped value loss ``0.5 * max((V - R)^2, (V_clip - R)^2)``, token mean.

  ``V_clip = old_V + clip(V - old_V, -eps, eps)``, as OpenAI's lm-human-preferences and TRL's
  PPO; ``clip_eps=None`` gives the plain ``0.5 (V - R)^2``. ``old_values`` and ``returns`` are
  constants.

  Returns:
    ``(loss, metrics)``: ``value_loss``, ``value_clip_fraction`` (share of tokens where the
    clipped term is larger, TRL's ``vf_clipfrac``), ``value_mean``.
  """
  values = upcast(values)
  old_values = jax.lax.stop_gradient(upcast(old_values))
  returns = jax.lax.stop_gradient(upcast(returns))
  unclipped = jnp.square(values - returns)  # [B, T]
  if clip_eps is None:
    clipped = unclipped
  else:
    clipped = jnp.square(old_values + jnp.clip(values - old_values, -clip_eps, clip_eps) - returns)
  mean = lambda x: masked_mean(x, mask, denominator)
  loss = 0.5 * mean(jnp.maximum(unclipped, clipped))
  metrics = {"value_loss": loss,
             "value_clip_fraction": mean((clipped > unclipped).astype(values.dtype)),
             "value_mean": mean(values)}
  return loss, finish_metrics(metrics)


@denominator_counts("mask")
def entropy_bonus(entropies, mask, *, denominator=None) -> tuple[jax.Array, Metrics]:
  """``-mean_t H_t``: add ``coef * entropy_bonus`` to a loss to reward entropy.

  ``entropies [B, T]`` from ``ops.shifted_entropy_from_logits``. Metrics: ``entropy``.
  """
  entropy = masked_mean(entropies, mask, denominator)
  return -entropy, finish_metrics({"entropy": entropy})

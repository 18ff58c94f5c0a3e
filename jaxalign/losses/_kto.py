"""KTO: Kahneman-Tversky optimisation on unpaired desirable / undesirable examples."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.losses._common import (Metrics, denominator_counts, finish_metrics, pair_mean,
                                     pair_weights)
from jaxalign.ops import masked_mean, upcast


@denominator_counts("examples")
def kto_reference_kl(kl_logps, ref_kl_logps, weights=None, denominator=None) -> jax.Array:
  """KTO's reference point ``z_0 = max(0, mean(log pi(y'|x) - log pi_ref(y'|x)))``, no gradient.

  ``y'`` are mismatched completions (another prompt's response, TRL's ``KL_*`` batch), one per
  row of ``kl_logps [B]``; ``denominator`` replaces the local (weighted) count. The clamp does
  not add over micro-batches: sum their unclamped means ``pair_mean(kl_logps - ref_kl_logps,
  weights, denominator)`` first and clamp the total (``losses.with_statistics`` does).
  """
  kl_logps = upcast(kl_logps)
  estimate = pair_mean(kl_logps - upcast(ref_kl_logps), weights, denominator)
  return jax.lax.stop_gradient(jnp.maximum(estimate, 0.0))


@denominator_counts("examples")
def kto_loss(logps, ref_logps, desirable, reference_kl, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0, weights=None,
             denominator=None, desirable_denominator=None,
             undesirable_denominator=None) -> tuple[jax.Array, Metrics]:
  """KTO loss, mean over examples.

  Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization" (arXiv
  2402.01306). With ``r = log pi(y|x) - log pi_ref(y|x)`` and the reference point ``z_0``:

    desirable:    lambda_D * (1 - sigmoid(beta (r - z_0)))
    undesirable:  lambda_U * (1 - sigmoid(beta (z_0 - r)))

  as TRL's KTOTrainer (``loss_type="kto"``); ``z_0`` never carries a gradient and is clamped at 0.

  Args:
    logps, ref_logps: ``[B]`` summed response log-probs of policy and reference.
    desirable: ``[B]`` bool, True for a desirable (thumbs-up) example.
    reference_kl: scalar ``z_0`` (``kto_reference_kl``); 0.0 turns the reference point off.
    beta: KL strength. desirable_weight, undesirable_weight: lambda_D, lambda_U.
    weights: ``[B]`` per-example weights (0 drops padding).
    denominator, desirable_denominator, undesirable_denominator: global (weighted) counts of
      all, desirable and undesirable examples when the batch is split; pass all three, so
      that every metric is ``sum_i w_i x_i / global count`` and micro-batches add up.

  Returns:
    ``(loss, metrics)``: ``kl`` (``z_0``; with ``denominator``, ``z_0`` times this batch's
    share ``sum(w) / denominator``, so micro-batches add up to ``z_0``), ``rewards/chosen``
    (mean ``beta r`` over desirable examples), ``rewards/rejected``, ``rewards/margins``
    (their difference), ``logps/chosen``, ``logps/rejected``. There is no
    ``rewards/accuracies``: the examples are not paired.
  """
  logratios = upcast(logps) - upcast(ref_logps)  # [B]
  z0 = jax.lax.stop_gradient(jnp.maximum(upcast(reference_kl), 0.0))
  desirable = jnp.asarray(desirable, bool)
  desirable_losses = desirable_weight * (1.0 - jax.nn.sigmoid(beta * (logratios - z0)))
  undesirable_losses = undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z0 - logratios)))
  per_example = jnp.where(desirable, desirable_losses, undesirable_losses)
  loss = pair_mean(per_example, weights, denominator)
  example_weights = pair_weights(logratios, weights)
  chosen = lambda x: masked_mean(x, jnp.where(desirable, example_weights, 0.0),
                                 desirable_denominator)
  rejected = lambda x: masked_mean(x, jnp.where(desirable, 0.0, example_weights),
                                   undesirable_denominator)
  rewards = beta * logratios
  metrics = {
      "kl": z0 if denominator is None else pair_mean(jnp.full_like(logratios, z0), weights,
                                                     denominator),
      "rewards/chosen": chosen(rewards), "rewards/rejected": rejected(rewards),
      "logps/chosen": chosen(upcast(logps)), "logps/rejected": rejected(upcast(logps)),
  }
  metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
  return loss, finish_metrics(metrics)

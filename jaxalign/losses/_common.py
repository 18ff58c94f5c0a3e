"""Pieces every preference loss shares: log-ratios, the pair reduction, reward metrics."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxalign.ops import masked_mean, upcast

Metrics = dict[str, jax.Array]


def finish_metrics(metrics: Mapping[str, jax.Array]) -> Metrics:
  """Metrics as float32 scalars outside the gradient."""
  return {name: jax.lax.stop_gradient(jnp.asarray(value, jnp.float32))
          for name, value in metrics.items()}


def denominator_counts(what: str):
  """Declares what a loss's ``denominator`` argument counts; ``losses.term`` binds it by that.

  ``what`` is a unit, ``"pairs"``, ``"examples"`` or ``"sequences"`` (``term`` binds the
  quantity ``pair_denominator``, ``example_denominator`` or ``sequence_denominator``), or the
  name of the loss's mask argument: the denominator is then that mask's number of ones (tokens)
  over the global batch, the quantity ``<mask quantity>_denominator``.
  """
  def declare(loss_fn):
    loss_fn.denominator_counts = what
    return loss_fn
  return declare


def pair_weights(per_pair: jax.Array, weights) -> jax.Array:
  """``weights [B]`` as floats, ones when ``None``."""
  if weights is None:
    return jnp.ones(per_pair.shape, per_pair.dtype)
  return upcast(weights)


def pair_mean(per_pair: jax.Array, weights, denominator=None) -> jax.Array:
  """Mean over pairs: ``sum(w * x) / max(sum(w), 1)``, or ``/ denominator`` when given.

  ``weights [B]`` are per-pair weights; 0 drops a padding row. For a plain mean of
  ``w * x`` over a batch of B pairs (importance weights), pass ``denominator=B``.
  """
  return masked_mean(per_pair, pair_weights(per_pair, weights), denominator)


def log_ratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
               reference_free: bool) -> tuple[jax.Array, jax.Array]:
  """``(log pi(y_w) - log pi_ref(y_w), log pi(y_l) - log pi_ref(y_l))`` in float32 ``[B]``.

  ``reference_free=True`` takes the reference as uniform: ``log pi_ref = 0``.
  """
  chosen, rejected = upcast(chosen_logps), upcast(rejected_logps)
  if reference_free:
    return chosen, rejected
  if ref_chosen_logps is None or ref_rejected_logps is None:
    raise ValueError("ref_chosen_logps and ref_rejected_logps are required unless "
                     "reference_free=True")
  return chosen - upcast(ref_chosen_logps), rejected - upcast(ref_rejected_logps)


def reward_metrics(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, weights,
                   denominator=None) -> Metrics:
  """TRL's DPOTrainer metric names: ``rewards/{chosen,rejected,accuracies,margins}``, ``logps/*``.

  Accuracy counts strict wins ``r_w > r_l`` (a tie counts as wrong), as TRL does.
  """
  mean = lambda x: pair_mean(x, weights, denominator)
  return {
      "rewards/chosen": mean(chosen_rewards),
      "rewards/rejected": mean(rejected_rewards),
      "rewards/accuracies": mean((chosen_rewards > rejected_rewards).astype(chosen_rewards.dtype)),
      "rewards/margins": mean(chosen_rewards - rejected_rewards),
      "logps/chosen": mean(upcast(chosen_logps)),
      "logps/rejected": mean(upcast(rejected_logps)),
  }


def preference_output(per_pair: jax.Array, beta: float, chosen_logratios: jax.Array,
                      rejected_logratios: jax.Array, chosen_logps, rejected_logps, weights,
                      denominator, **extra) -> tuple[jax.Array, Metrics]:
  """``(pair mean of per_pair, metrics)`` with implicit rewards ``beta * log-ratio``."""
  loss = pair_mean(per_pair, weights, denominator)
  metrics = reward_metrics(beta * chosen_logratios, beta * rejected_logratios, chosen_logps,
                           rejected_logps, weights, denominator)
  metrics.update(extra)
  return loss, finish_metrics(metrics)

"""Reward-model training: the Bradley-Terry pairwise loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.losses._common import Metrics, denominator_counts, finish_metrics, pair_mean
from jaxalign.ops import upcast


@denominator_counts("pairs")
def bradley_terry_loss(chosen_rewards: jax.Array, rejected_rewards: jax.Array, margin=None, *,
                       center_rewards_coefficient: float | None = None, weights=None,
                       denominator=None) -> tuple[jax.Array, Metrics]:
  """Pairwise Bradley-Terry loss ``-log sigmoid(r_w - r_l - m)``, mean over pairs.

  Bradley & Terry (1952); for reward models Ouyang et al. 2022 (InstructGPT, arXiv
  2203.02155). The optional margin ``m [B]`` is Llama 2's (Touvron et al. 2023, arXiv
  2307.09288); ``center_rewards_coefficient`` adds ``c * mean((r_w + r_l)^2)`` (Eisenstein et
  al. 2023, arXiv 2312.09244). Same formula as TRL's RewardTrainer.

  Args:
    chosen_rewards, rejected_rewards: ``[B]`` scalar rewards.
    margin: ``[B]`` or scalar, or ``None``.
    weights: ``[B]`` per-pair weights (0 drops a padding row).
    denominator: global number of pairs when the batch is split.

  Returns:
    ``(loss, metrics)`` with ``accuracy``, ``chosen_reward``, ``rejected_reward``, ``margin``.
  """
  chosen, rejected = upcast(chosen_rewards), upcast(rejected_rewards)
  difference = chosen - rejected  # [B]
  logits = difference if margin is None else difference - upcast(margin)
  mean = lambda x: pair_mean(x, weights, denominator)
  loss = mean(-jax.nn.log_sigmoid(logits))
  if center_rewards_coefficient is not None:
    loss = loss + center_rewards_coefficient * mean(jnp.square(chosen + rejected))
  metrics = {
      "accuracy": mean((difference > 0).astype(difference.dtype)),
      "chosen_reward": mean(chosen),
      "rejected_reward": mean(rejected),
      "margin": mean(difference),
  }
  return loss, finish_metrics(metrics)

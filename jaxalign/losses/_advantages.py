"""Advantage estimators: GAE (PPO), leave-one-out (RLOO), group-normalised (GRPO), whitening.

Time-step suffixes follow rlax: ``_t`` for step t, ``_tp1`` for step t + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.ops import masked_whiten, upcast


def gae_advantages(rewards, values, mask, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation, one reverse ``lax.scan`` over time.

  Schulman et al. 2015, "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation" (arXiv 1506.02438), Eq. 16:

    delta_t = r_t + gamma * V_{t+1} - V_t
    A_t = delta_t + gamma * lam * A_{t+1},    R_t = A_t + V_t.

  The episode ends at the last real token of each row: rewards and values outside ``mask``
  count as 0, so ``V`` after the last response token bootstraps 0. The mask holds one
  contiguous response per row (prompt before it, padding after it); outputs are 0 outside it.

  Args:
    rewards: ``[B, T]`` per-token rewards (``kl_penalized_rewards``).
    values: ``[B, T]`` value of the state in which token t is chosen.
    mask: ``[B, T]`` response tokens.
    gamma, lam: discount and GAE lambda.

  Returns:
    ``(advantages, returns)``, each ``[B, T]``.
  """
  mask = upcast(mask)
  rewards_t = jnp.where(mask != 0, upcast(rewards), 0.0)
  values_t = jnp.where(mask != 0, upcast(values), 0.0)
  values_tp1 = jnp.pad(values_t[:, 1:], ((0, 0), (0, 1)))  # [B, T]
  continues_tp1 = jnp.pad(mask[:, 1:], ((0, 0), (0, 1))) != 0  # [B, T]
  delta_t = rewards_t + gamma * values_tp1 - values_t

  def step(advantage_tp1, inputs):
    delta, continues = inputs  # [B] each
    advantage = delta + gamma * lam * jnp.where(continues, advantage_tp1, 0.0)
    return advantage, advantage

  _, advantages = jax.lax.scan(step, jnp.zeros_like(delta_t[:, 0]),
                               (delta_t.T, continues_tp1.T), reverse=True)  # [T, B]
  advantages = jnp.where(mask != 0, advantages.T, 0.0)  # [B, T]
  return advantages, jnp.where(mask != 0, advantages + values_t, 0.0)


def whiten_advantages(advantages, mask) -> jax.Array:
  """Zero mean, unit variance over the masked tokens of the whole rollout batch (TRL's PPO)."""
  return masked_whiten(advantages, mask, shift_mean=True)


def whiten_rewards(rewards, mask, shift_mean: bool = False) -> jax.Array:
  """Unit variance over masked tokens; the mean is kept unless ``shift_mean`` (TRL's default)."""
  return masked_whiten(rewards, mask, shift_mean=shift_mean)


def _grouped(rewards, group_size: int) -> jax.Array:
  rewards = upcast(rewards)
  if group_size < 2 or rewards.shape[0] % group_size:
    raise ValueError(f"need group_size >= 2 dividing the batch {rewards.shape[0]}, "
                     f"got {group_size}")
  return rewards.reshape(-1, group_size)  # [P, G]


def rloo_advantages(rewards, group_size: int) -> jax.Array:
  """REINFORCE leave-one-out: ``A_i = r_i - mean_{j != i} r_j`` within each prompt's group.

  Kool, van Hoof, Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian
  et al. 2024, "Back to Basics" (arXiv 2402.14740). ``rewards [B]`` holds each prompt's
  ``group_size`` samples in consecutive rows (prompt-major: ``reshape(-1, group_size)``, as
  TRL's RLOOTrainer and GRPOTrainer). Returns ``[B]``.
  """
  grouped = _grouped(rewards, group_size)  # [P, G]
  baselines = (grouped.sum(axis=1, keepdims=True) - grouped) / (group_size - 1)
  return (grouped - baselines).reshape(-1)


def grpo_advantages(rewards, group_size: int, eps: float = 1e-4, scale: bool = True) -> jax.Array:
  """GRPO: ``A_i = (r_i - mean(group)) / (std(group) + eps)``.

  Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), Sec. 4.1.2 (outcome supervision).
  ``std`` is the unbiased (n - 1) standard deviation and ``eps = 1e-4``, as TRL's
  GRPOTrainer. ``scale=False`` drops the division (Liu et al. 2025, "Understanding R1-Zero-Like
  Training", Dr. GRPO, arXiv 2503.20783). Same prompt-major layout as ``rloo_advantages``.
  """
  grouped = _grouped(rewards, group_size)  # [P, G]
  centred = grouped - grouped.mean(axis=1, keepdims=True)
  if scale:
    centred = centred / (jnp.std(grouped, axis=1, ddof=1, keepdims=True) + eps)
  return centred.reshape(-1)

"""Advantage estimators: GAE (PPO), leave-one-out (RLOO), group-normalised (GRPO), REINFORCE++,
whitening.

Time-step suffixes follow rlax: ``_t`` for step t, ``_tp1`` for step t + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.ops import last_true_index, masked_mean, masked_whiten, upcast


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


def _batch_normalised(advantages, eps: float) -> jax.Array:
  """``(A - mean(A)) / (std(A) + eps)`` over the whole batch, unbiased std (TRL's ``nanstd``)."""
  return (advantages - advantages.mean()) / (jnp.std(advantages, ddof=1) + eps)


def rloo_advantages(rewards, group_size: int, normalize: bool = False,
                    eps: float = 1e-4) -> jax.Array:
  """REINFORCE leave-one-out: ``A_i = r_i - mean_{j != i} r_j`` within each prompt's group.

  Kool, van Hoof, Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian
  et al. 2024, "Back to Basics" (arXiv 2402.14740). ``rewards [B]`` holds each prompt's
  ``group_size`` samples in consecutive rows (prompt-major: ``reshape(-1, group_size)``, as
  TRL's RLOOTrainer and GRPOTrainer). ``normalize=True`` then standardises over the whole
  batch, ``(A - mean(A)) / (std(A) + eps)`` with the unbiased std, as TRL's RLOOTrainer
  ``normalize_advantages``. Returns ``[B]``.
  """
  grouped = _grouped(rewards, group_size)  # [P, G]
  baselines = (grouped.sum(axis=1, keepdims=True) - grouped) / (group_size - 1)
  advantages = (grouped - baselines).reshape(-1)
  return _batch_normalised(advantages, eps) if normalize else advantages


_SCALE_REWARDS = {True: "group", False: "none", "group": "group", "batch": "batch",
                  "none": "none"}


def grpo_advantages(rewards, group_size: int, eps: float = 1e-4,
                    scale: bool | str = True) -> jax.Array:
  """GRPO: ``A_i = (r_i - mean(group)) / (std + eps)``.

  Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), Sec. 4.1.2 (outcome supervision).
  ``std`` is the unbiased (n - 1) standard deviation and ``eps = 1e-4``, as TRL's
  GRPOTrainer. ``scale`` is TRL's ``scale_rewards``: ``"group"`` (or ``True``) divides by the
  std of each prompt's group; ``"batch"`` by the std of all ``B`` rewards (the mean stays the
  group's; Liu et al. 2025, "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning",
  arXiv 2508.08221); ``"none"`` (or ``False``) drops the division (Liu et al. 2025,
  "Understanding R1-Zero-Like Training", Dr. GRPO, arXiv 2503.20783). Same prompt-major layout
  as ``rloo_advantages``. Returns ``[B]``.
  """
  if scale not in _SCALE_REWARDS:
    raise ValueError(f"scale must be 'group', 'batch', 'none' or a bool, got {scale!r}")
  scale = _SCALE_REWARDS[scale]
  grouped = _grouped(rewards, group_size)  # [P, G]
  centred = grouped - grouped.mean(axis=1, keepdims=True)
  if scale == "group":
    centred = centred / (jnp.std(grouped, axis=1, ddof=1, keepdims=True) + eps)
  elif scale == "batch":
    centred = centred / (jnp.std(grouped, ddof=1) + eps)
  return centred.reshape(-1)


def reinforce_pp_advantages(scores, mask, *, token_rewards=None, group_size: int | None = None,
                            gamma: float = 1.0, eps: float = 1e-8) -> jax.Array:
  """REINFORCE++: returns-to-go normalised over the whole batch (a global baseline).

  Hu 2025, "REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and Reward
  Models" (arXiv 2501.03262). Per-token rewards pay the sequence score at the last response
  token, plus optional per-token rewards (the KL penalty in the reward, ``-beta * k1``):

    r_t = token_rewards_t + 1[t = last] s,      G_t = sum_{k >= t} gamma^(k - t) r_k,
    A_t = (G_t - mean(G)) / std(G)

  with ``mean`` and ``std`` over the masked tokens of the whole batch (the biased variance,
  ``rsqrt(max(var, eps))``, as OpenRLHF's ``reinforce``). ``group_size`` gives
  REINFORCE++-baseline (OpenRLHF's ``reinforce_baseline``): each score first has its group's
  mean score subtracted, ``s_i - mean_group(s)`` (the prompt-major layout of
  ``grpo_advantages``), then the same steps; the std division is the batch's, not the group's.
  The statistics belong to the whole rollout batch: compute them before splitting it.

  Args:
    scores: ``[B]`` sequence rewards.
    mask: ``[B, T]`` one contiguous response per row.
    token_rewards: ``[B, T]`` extra per-token rewards, e.g. ``-beta * ops.kl_k1(logps,
      ref_logps)``; 0 outside ``mask``.
    group_size: the baseline variant's group size, or ``None``.
    gamma: discount (1 in the paper's outcome-reward setting).

  Returns:
    ``[B, T]`` advantages, 0 outside ``mask``.
  """
  mask = upcast(mask)
  valid = mask != 0
  scores = upcast(scores)
  if group_size is not None:
    grouped = _grouped(scores, group_size)
    scores = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)
  has_response = valid.any(axis=1)  # [B]
  at_last = jax.nn.one_hot(last_true_index(mask), mask.shape[1], dtype=scores.dtype)
  rewards = jnp.where(has_response, scores, 0.0)[:, None] * at_last  # [B, T]
  if token_rewards is not None:
    rewards = rewards + upcast(token_rewards)
  rewards = jnp.where(valid, rewards, 0.0)

  def step(return_tp1, reward_t):
    return_t = reward_t + gamma * return_tp1
    return return_t, return_t

  _, returns = jax.lax.scan(step, jnp.zeros_like(rewards[:, 0]), rewards.T, reverse=True)
  returns = returns.T  # [B, T]
  mean = masked_mean(returns, mask)
  variance = masked_mean(jnp.square(returns - mean), mask)
  return jnp.where(valid, (returns - mean) * jax.lax.rsqrt(jnp.maximum(variance, eps)), 0.0)

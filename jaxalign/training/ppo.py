"""PPO for language models: rollout with the compiled sampler, reward-model score plus a
per-token KL penalty, GAE with a value head, then epochs of clipped minibatch updates.

The knobs that matter in practice (Xu et al. 2024, "Is DPO Superior to PPO for LLM
Alignment?", Table 3; Huang et al. 2024, "The N Implementation Details of RLHF with PPO") are
fields of ``PPOSpec``: advantage whitening, large batches via minibatches, an EMA reference,
adaptive or fixed KL, reward whitening and clipping, the missing-EOS penalty, a zero-init
value head, and one temperature for sampling and for the ratio's log-probs.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from jaxalign.losses import (AdaptiveKLController, FixedKLController, entropy_bonus,
                             gae_advantages, kl_penalized_rewards, ppo_policy_loss,
                             ppo_value_loss, whiten_advantages, whiten_rewards)
from jaxalign.models import TransformerConfig
from jaxalign.ops import masked_mean, masked_sum
from jaxalign.training.forward import reward_scores
from jaxalign.training.rollout import Rollout, policy_value_outputs, response_logps


@dataclasses.dataclass(frozen=True)
class PPOSpec:
  rollout_batch_size: int = 64     # prompts per iteration
  max_new_tokens: int = 24
  temperature: float = 1.0         # sampling and the ratio's log-probs use the same one
  epochs: int = 2                  # passes over each rollout
  num_minibatches: int = 2
  clip_eps: float = 0.2
  dual_clip: float | None = None
  value_clip_eps: float | None = 0.2
  value_coef: float = 0.5
  entropy_coef: float = 0.0
  gamma: float = 1.0
  lam: float = 0.95
  kl_coef: float = 0.05
  kl_estimator: str = "k1"         # "k1" or "k3"
  adaptive_kl: bool = False
  kl_target: float = 6.0
  kl_horizon: float = 10000.0
  whiten_advantages: bool = True
  whiten_rewards: bool = False
  reward_clip: float | None = None  # clip the RM score to [-c, c]
  missing_eos_penalty: float | None = None
  ref_ema: float = 0.0             # reference <- (1 - a) ref + a policy each iteration
  shared_value_head: bool = True   # value head on the policy backbone (else a separate critic)


@flax.struct.dataclass
class Experience:
  """What the update reads: a rollout plus old log-probs / values, advantages, returns."""

  sequence: jax.Array
  sequence_mask: jax.Array
  response_mask: jax.Array
  old_logps: jax.Array    # [B, N] at the sampling temperature (the sampler's)
  old_values: jax.Array   # [B, N]
  advantages: jax.Array   # [B, N]
  returns: jax.Array      # [B, N]


def kl_controller(spec: PPOSpec, value):
  if spec.adaptive_kl:
    return AdaptiveKLController(value, target=spec.kl_target, horizon=spec.kl_horizon)
  return FixedKLController(value)


@functools.partial(jax.jit, static_argnames=("config", "rm_config", "spec"))
def make_experience(config: TransformerConfig, rm_config: TransformerConfig, spec: PPOSpec,
                    params, ref_params, rm_params, rollout: Rollout, kl_coef):
  """Scores a rollout and computes per-token rewards, advantages and returns."""
  P = rollout.prompt_tokens.shape[1]
  mask = rollout.response_mask
  scores = reward_scores(rm_config, rm_params, rollout.sequence, rollout.sequence_mask)  # [B]
  if spec.reward_clip is not None:
    scores = jnp.clip(scores, -spec.reward_clip, spec.reward_clip)
  ref_logps = response_logps(config, ref_params, rollout.sequence, rollout.sequence_mask, P)
  _, _, values = policy_value_outputs(config, params, rollout.sequence, rollout.sequence_mask,
                                      P, spec.temperature)
  rewards, metrics = kl_penalized_rewards(
      rollout.policy_logps, ref_logps, mask, scores, kl_coef, estimator=spec.kl_estimator,
      missing_eos_penalty=spec.missing_eos_penalty, has_eos=rollout.has_eos)
  if spec.whiten_rewards:
    rewards = whiten_rewards(rewards, mask, shift_mean=False)
  advantages, returns = gae_advantages(rewards, values, mask, spec.gamma, spec.lam)
  if spec.whiten_advantages:
    advantages = whiten_advantages(advantages, mask)
  kl_per_sequence = masked_sum(rollout.policy_logps - ref_logps, mask, axis=1)
  metrics = dict(metrics, **{
      "rollout/rm_score": jnp.mean(scores), "rollout/kl": jnp.mean(kl_per_sequence),
      "rollout/length": jnp.mean(mask.sum(axis=1).astype(jnp.float32)),
      "rollout/eos_fraction": jnp.mean(rollout.has_eos.astype(jnp.float32)),
      "rollout/advantage_mean": masked_mean(advantages, mask)})
  experience = Experience(rollout.sequence, rollout.sequence_mask, mask,
                          rollout.sampler_logps, values, advantages, returns)
  return experience, scores, metrics


def ppo_loss(config: TransformerConfig, spec: PPOSpec, params, batch: Experience, denominator):
  P = batch.sequence.shape[1] - batch.response_mask.shape[1]
  logps, entropies, values = policy_value_outputs(config, params, batch.sequence,
                                                  batch.sequence_mask, P, spec.temperature)
  mask = batch.response_mask
  policy, policy_metrics = ppo_policy_loss(logps, batch.old_logps, batch.advantages, mask,
                                           clip_eps=spec.clip_eps, dual_clip=spec.dual_clip,
                                           denominator=denominator)
  value, value_metrics = ppo_value_loss(values, batch.old_values, batch.returns, mask,
                                        clip_eps=spec.value_clip_eps, denominator=denominator)
  entropy, entropy_metrics = entropy_bonus(entropies, mask, denominator=denominator)
  loss = policy + spec.value_coef * value + spec.entropy_coef * entropy
  metrics = {**policy_metrics, **value_metrics, **entropy_metrics, "loss": loss}
  return loss, {f"ppo/{k}": v for k, v in metrics.items()}


@functools.partial(jax.jit, static_argnames=("config", "spec"), donate_argnums=(2,))
def ppo_minibatch_step(config, spec, state, batch: Experience):
  """One optimizer step on one minibatch (token means over the minibatch)."""
  denominator = jnp.maximum(batch.response_mask.sum().astype(jnp.float32), 1.0)
  (_, metrics), grads = jax.value_and_grad(
      lambda p: ppo_loss(config, spec, p, batch, denominator), has_aux=True)(state.params)
  return state.apply_gradients(grads), metrics


def explained_variance(values, returns, mask) -> jax.Array:
  """1 - Var(returns - values) / Var(returns) over response tokens."""
  residual = masked_mean(jnp.square(returns - values - masked_mean(returns - values, mask)), mask)
  total = masked_mean(jnp.square(returns - masked_mean(returns, mask)), mask)
  return 1.0 - residual / jnp.maximum(total, 1e-8)


def ppo_update(config: TransformerConfig, spec: PPOSpec, state, experience: Experience, rng):
  """``spec.epochs`` passes of ``spec.num_minibatches`` minibatches (a fresh permutation per
  epoch); returns the new state and the metrics of every minibatch, in order."""
  B = experience.sequence.shape[0]
  if B % spec.num_minibatches:
    raise ValueError(f"rollout batch {B} is not divisible by num_minibatches="
                     f"{spec.num_minibatches}")
  size = B // spec.num_minibatches
  history = []
  for epoch in range(spec.epochs):
    order = jax.random.permutation(jax.random.fold_in(rng, epoch), B)
    for start in range(0, B, size):
      minibatch = jax.tree_util.tree_map(lambda x: x[order[start:start + size]], experience)
      state, metrics = ppo_minibatch_step(config, spec, state, minibatch)
      history.append(metrics)
  return state, history


def ema_update(ref_params, params, rate: float):
  """``(1 - rate) * ref + rate * params``; rate 0 keeps the reference fixed."""
  if rate == 0.0:
    return ref_params
  return jax.tree_util.tree_map(lambda r, p: (1.0 - rate) * r + rate * p, ref_params, params)

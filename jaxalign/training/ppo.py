"""PPO for language models: rollout with the compiled sampler, reward-model score plus a
per-token KL penalty, GAE with a value head, then epochs of clipped minibatch updates.

The knobs that matter in practice (Xu et al. 2024, "Is DPO Superior to PPO for LLM
Alignment?", Table 3; Huang et al. 2024, "The N Implementation Details of RLHF with PPO") are
fields of ``PPOSpec``: advantage whitening, large batches via minibatches, an EMA reference,
adaptive or fixed KL, reward whitening and clipping, the missing-EOS penalty, a zero-init
value head, and one temperature for sampling, the ratio's log-probs and the KL penalty.

Temperature convention (TRL's): responses are sampled from pi_T = softmax(logits / T), and
every log-prob the update reads is at T: the ratio's old and new log-probs, and both sides
of the KL penalty (policy and reference logits divided by T), so ``rollout/kl`` estimates
KL(pi_T || pi_ref,T) >= 0 on samples from pi_T. The old log-probs and the penalty's policy
log-probs come from one training-layout forward pass over the rollout (the same function the
update differentiates), not from the KV-cache sampler; the sampler-vs-trainer gap is logged
as ``rollout/logprob_mismatch`` (mean) and ``rollout/logprob_mismatch_max`` per token.
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
from jaxalign.training.step import LoraBound, accumulate_gradients


@dataclasses.dataclass(frozen=True)
class PPOSpec:
  rollout_batch_size: int = 64     # prompts per iteration
  max_new_tokens: int = 24
  temperature: float = 1.0         # sampling, the ratio's log-probs and the KL penalty (> 0)
  top_k: int = 0                   # sampler truncation (0: off); the trainer scores on the
  top_p: float = 1.0               # same support (kept_counts), so the first ratio is 1
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
  old_logps: jax.Array    # [B, N] at the sampling temperature (training-layout recompute)
  old_values: jax.Array   # [B, N]
  advantages: jax.Array   # [B, N]
  returns: jax.Array      # [B, N]
  kept_counts: jax.Array | None = None  # [B, N] the sampler's support (top-k / top-p)


def check_ppo_spec(spec: PPOSpec, micro_batches: int = 1) -> None:
  """Config-time checks of the ``ppo.*`` keys (before any data or model is built)."""
  if not spec.temperature > 0:
    raise ValueError(f"ppo.temperature must be > 0 (PPO samples and scores at it; 0 would "
                     f"be greedy, whose log-probs are not a policy's), got {spec.temperature}")
  if spec.top_k < 0 or not 0 < spec.top_p <= 1:
    raise ValueError(f"ppo.top_k must be >= 0 and ppo.top_p in (0, 1], got {spec.top_k} and "
                     f"{spec.top_p}")
  if spec.kl_estimator not in ("k1", "k3"):
    raise ValueError(f"ppo.kl_estimator must be 'k1' or 'k3', got {spec.kl_estimator!r}")
  if not 0.0 <= spec.ref_ema <= 1.0:
    raise ValueError(f"ppo.ref_ema must be in [0, 1], got {spec.ref_ema}")
  if spec.epochs < 1 or spec.num_minibatches < 1:
    raise ValueError(f"ppo.epochs ({spec.epochs}) and ppo.num_minibatches "
                     f"({spec.num_minibatches}) must be >= 1")
  if spec.rollout_batch_size % spec.num_minibatches:
    raise ValueError(f"ppo.rollout_batch_size={spec.rollout_batch_size} is not divisible by "
                     f"ppo.num_minibatches={spec.num_minibatches}")
  size = spec.rollout_batch_size // spec.num_minibatches
  if size % micro_batches:
    raise ValueError(f"a PPO minibatch of {size} rows (ppo.rollout_batch_size / "
                     f"ppo.num_minibatches) is not divisible by loop.micro_batches="
                     f"{micro_batches}")
  if spec.adaptive_kl and not spec.kl_target > 0:
    raise ValueError(f"ppo.kl_target must be > 0 with ppo.adaptive_kl, got {spec.kl_target}")


def kl_controller(spec: PPOSpec, value):
  if spec.adaptive_kl:
    return AdaptiveKLController(value, target=spec.kl_target, horizon=spec.kl_horizon)
  return FixedKLController(value)


def logprob_mismatch(sampler_logps, trainer_logps, mask) -> dict[str, jax.Array]:
  """Mean and max per-token ``|sampler - trainer|`` log-prob gap over response tokens."""
  gap = jnp.where(mask > 0, jnp.abs(sampler_logps - trainer_logps), 0.0)  # [B, N]
  return {"rollout/logprob_mismatch": masked_mean(gap, mask),
          "rollout/logprob_mismatch_max": jnp.max(gap)}


def explained_variance(values, returns, mask) -> jax.Array:
  """1 - Var(returns - values) / Var(returns) over response tokens."""
  residual = masked_mean(jnp.square(returns - values - masked_mean(returns - values, mask)), mask)
  total = masked_mean(jnp.square(returns - masked_mean(returns, mask)), mask)
  return 1.0 - residual / jnp.maximum(total, 1e-8)


@functools.partial(jax.jit, static_argnames=("config", "rm_config", "spec"))
def make_experience(config: TransformerConfig, rm_config: TransformerConfig, spec: PPOSpec,
                    params, ref_params, rm_params, rollout: Rollout, kl_coef):
  """Scores a rollout and computes per-token rewards, advantages and returns.

  One training-layout forward pass of the policy gives the old log-probs (at
  ``spec.temperature``), the values, and the policy side of the KL penalty; the reference
  is scored at the same temperature by the same function.
  """
  P = rollout.prompt_tokens.shape[1]
  mask = rollout.response_mask
  scores = reward_scores(rm_config, rm_params, rollout.sequence, rollout.sequence_mask)  # [B]
  if spec.reward_clip is not None:
    scores = jnp.clip(scores, -spec.reward_clip, spec.reward_clip)
  logps, _, values = policy_value_outputs(config, params, rollout.sequence,
                                          rollout.sequence_mask, P, spec.temperature,
                                          rollout.kept_counts)
  ref_logps = response_logps(config, ref_params, rollout.sequence, rollout.sequence_mask, P,
                             spec.temperature)
  rewards, metrics = kl_penalized_rewards(
      logps, ref_logps, mask, scores, kl_coef, estimator=spec.kl_estimator,
      missing_eos_penalty=spec.missing_eos_penalty, has_eos=rollout.has_eos)
  if spec.whiten_rewards:
    rewards = whiten_rewards(rewards, mask, shift_mean=False)
  advantages, returns = gae_advantages(rewards, values, mask, spec.gamma, spec.lam)
  if spec.whiten_advantages:
    advantages = whiten_advantages(advantages, mask)
  kl_per_sequence = masked_sum(logps - ref_logps, mask, axis=1)  # k1, at the temperature
  metrics = dict(metrics, **logprob_mismatch(rollout.sampler_logps, logps, mask), **{
      "rollout/rm_score": jnp.mean(scores), "rollout/kl": jnp.mean(kl_per_sequence),
      "rollout/length": jnp.mean(mask.sum(axis=1).astype(jnp.float32)),
      "rollout/eos_fraction": jnp.mean(rollout.has_eos.astype(jnp.float32)),
      "rollout/advantage_mean": masked_mean(advantages, mask),
      "ppo/explained_variance": explained_variance(values, returns, mask)})
  experience = Experience(rollout.sequence, rollout.sequence_mask, mask,
                          jax.lax.stop_gradient(logps), values, advantages, returns,
                          rollout.kept_counts)
  return experience, scores, metrics


def ppo_loss(config: TransformerConfig, spec: PPOSpec, params, batch: Experience, denominator):
  P = batch.sequence.shape[1] - batch.response_mask.shape[1]
  logps, entropies, values = policy_value_outputs(config, params, batch.sequence,
                                                  batch.sequence_mask, P, spec.temperature,
                                                  batch.kept_counts)
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


@dataclasses.dataclass(frozen=True)
class PPOObjective:
  """PPO's loss as an objective of ``training.step``: token means over the global minibatch,
  so gradient accumulation (``loop.micro_batches``) changes no loss, metric or gradient."""

  config: TransformerConfig
  spec: PPOSpec
  needs_reference = False

  def denominators(self, batch: Experience) -> dict:
    return {"tokens": jnp.maximum(batch.response_mask.sum().astype(jnp.float32), 1.0)}

  def loss(self, params, ref_params, batch: Experience, denominators: dict):
    del ref_params
    return ppo_loss(self.config, self.spec, params, batch, denominators["tokens"])


@functools.partial(jax.jit, static_argnames=("config", "spec", "micro_batches"),
                   donate_argnums=(2,))
def ppo_minibatch_step(config, spec, state, batch: Experience, micro_batches: int = 1):
  """One optimizer step on one minibatch, accumulated over ``micro_batches`` slices."""
  objective = PPOObjective(config, spec)
  if state.base_params is not None:  # LoRA: the policy's adapters (and the value params)
    objective = LoraBound(objective, state.base_params, entry="policy")
  _, metrics, grads = accumulate_gradients(objective, state.params, None,
                                           batch, micro_batches)
  grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                           for g in jax.tree_util.tree_leaves(grads)))
  return state.apply_gradients(grads), dict(metrics, **{"ppo/grad_norm": grad_norm})


@functools.partial(jax.jit, static_argnames=("size",))
def _minibatch(experience: Experience, rng, epoch, index, size: int) -> Experience:
  """Minibatch ``index`` of epoch ``epoch``: rows ``order[index * size : (index + 1) * size]``
  of a permutation drawn from ``fold_in(rng, epoch)`` (one program, multi-host safe)."""
  B = experience.sequence.shape[0]
  order = jax.random.permutation(jax.random.fold_in(rng, epoch), B)
  rows = jax.lax.dynamic_slice_in_dim(order, index * size, size)
  return jax.tree_util.tree_map(lambda x: x[rows], experience)


def ppo_update(config: TransformerConfig, spec: PPOSpec, state, experience: Experience, rng,
               micro_batches: int = 1):
  """``spec.epochs`` passes of ``spec.num_minibatches`` minibatches (a fresh permutation per
  epoch), each step accumulated over ``micro_batches``; returns the new state and the
  metrics of every minibatch, in order."""
  B = experience.sequence.shape[0]
  if B % spec.num_minibatches:
    raise ValueError(f"rollout batch {B} is not divisible by num_minibatches="
                     f"{spec.num_minibatches}")
  size = B // spec.num_minibatches
  history = []
  for epoch in range(spec.epochs):
    for index in range(spec.num_minibatches):
      minibatch = _minibatch(experience, rng, epoch, index, size)
      state, metrics = ppo_minibatch_step(config, spec, state, minibatch, micro_batches)
      history.append(metrics)
  return state, history


def ema_reference(params):
  """The starting reference of an EMA: a float32 copy of ``params``. The EMA lives in
  float32 whatever the policy's dtype: in bfloat16, ``(1 - a) ref + a policy`` with
  a = 1e-3 rounds most of each step away (bf16 keeps 8 bits of mantissa)."""
  return jax.tree_util.tree_map(lambda x: jnp.array(x, jnp.float32, copy=True), params)


@jax.jit
def _ema(ref_params, params, rate):
  return jax.tree_util.tree_map(
      lambda r, p: ((1.0 - rate) * r.astype(jnp.float32)
                    + rate * p.astype(jnp.float32)).astype(r.dtype), ref_params, params)


def ema_update(ref_params, params, rate: float):
  """``(1 - rate) * ref + rate * params`` computed in float32 (and kept in the reference's
  dtype: float32 when it comes from ``ema_reference``); rate 0 keeps the reference fixed."""
  if rate == 0.0:
    return ref_params
  return _ema(ref_params, params, jnp.float32(rate))

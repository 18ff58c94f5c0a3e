"""Critic-free RL for language models: GRPO, RLOO and REINFORCE++ on one rollout.

An iteration samples ``group_size`` responses for each of ``prompts_per_iteration`` prompts
(one prefill per prompt: ``generate(num_samples=G)``), scores them with reward functions
and / or a reward model, turns the rewards into advantages per group, and runs
``num_iterations`` (GRPO's mu) passes of clipped policy-gradient updates
(``losses.policy_gradient_loss``). There is no value model. The knobs are the axes along which
the 2025 variants differ (Dr. GRPO, DAPO, GSPO, CISPO); docs/training.md maps each paper to
its settings.

Conventions are PPO's (docs/conventions.md): every log-prob at ``temperature`` on the
sampler's support (top-k / top-p ``kept_counts``); old log-probs from one training-layout
forward pass; the sampler-vs-trainer gap logged as ``rollout/logprob_mismatch``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from jaxalign.losses import (grpo_advantages, policy_gradient_loss, reinforce_pp_advantages,
                             rloo_advantages)
from jaxalign.losses._policy_gradient import AGGREGATIONS, IMPORTANCE_LEVELS
from jaxalign.models import TransformerConfig
from jaxalign.ops import entropy_from_logits, masked_mean
from jaxalign.training.ppo import logprob_mismatch
from jaxalign.training.rollout import (Rollout, policy_logps, response_logits,
                                       response_logps)
from jaxalign.training.step import LoraBound, accumulate_gradients

ADVANTAGES = ("grpo", "rloo", "reinforce++", "reinforce++_baseline")


@dataclasses.dataclass(frozen=True)
class GRPOSpec:
  prompts_per_iteration: int = 16
  group_size: int = 8                 # G samples per prompt
  max_new_tokens: int = 24
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  num_iterations: int = 1             # mu: passes over each rollout
  num_minibatches: int = 1            # optimizer steps per pass
  advantage: str = "grpo"             # grpo | rloo | reinforce++ | reinforce++_baseline
  scale_rewards: str = "group"        # grpo: group | batch | none (Dr. GRPO: none)
  advantage_eps: float = 1e-4
  aggregation: str = "token_mean"     # token_mean (DAPO) | sequence_mean (GRPO) | constant
  importance_level: str = "token"     # token | sequence (GSPO)
  clip_low: float = 0.2
  clip_high: float = 0.2              # DAPO's clip-higher: 0.28
  delta: float | None = None          # two-sided clipping: upper bound of the raw ratio
  cispo: bool = False                 # CISPO's clipped, detached importance weight
  kl_coef: float = 0.0                # beta of the KL to the reference (0: no reference)
  kl_estimator: str = "k3"
  kl_in: str = "loss"                 # loss (GRPO, k3) | reward (REINFORCE++, k1 per token)
  ref_ema: float = 0.0                # reference <- (1 - a) ref + a policy per iteration
  entropy_coef: float = 0.0
  filter_zero_variance: bool = False  # DAPO's dynamic sampling: drop groups of equal rewards
  mask_truncated: bool = False        # exclude completions that hit max_new_tokens (no EOS)


def check_grpo_spec(spec: GRPOSpec, micro_batches: int = 1, key: str = "grpo") -> None:
  """Config-time checks of the ``grpo.*`` keys, each error naming the key."""
  def need(ok: bool, message: str):
    if not ok:
      raise ValueError(f"{key}.{message}")
  need(spec.temperature > 0, f"temperature must be > 0, got {spec.temperature}")
  need(spec.top_k >= 0 and 0 < spec.top_p <= 1,
       f"top_k must be >= 0 and top_p in (0, 1], got {spec.top_k}, {spec.top_p}")
  need(spec.group_size >= 2, f"group_size must be >= 2 (a group baseline), got "
       f"{spec.group_size}")
  need(spec.prompts_per_iteration >= 1, "prompts_per_iteration must be >= 1")
  need(spec.num_iterations >= 1 and spec.num_minibatches >= 1,
       "num_iterations and num_minibatches must be >= 1")
  rows = spec.prompts_per_iteration * spec.group_size
  need(rows % spec.num_minibatches == 0,
       f"num_minibatches={spec.num_minibatches} must divide the {rows} samples of an "
       f"iteration (prompts_per_iteration x group_size)")
  need((rows // spec.num_minibatches) % micro_batches == 0,
       f"num_minibatches: a minibatch of {rows // spec.num_minibatches} samples is not "
       f"divisible by loop.micro_batches={micro_batches}")
  need(spec.advantage in ADVANTAGES, f"advantage must be one of {ADVANTAGES}, got "
       f"{spec.advantage!r}")
  need(spec.scale_rewards in ("group", "batch", "none"),
       f"scale_rewards must be group, batch or none, got {spec.scale_rewards!r}")
  need(spec.aggregation in AGGREGATIONS, f"aggregation must be one of {AGGREGATIONS}, got "
       f"{spec.aggregation!r}")
  need(spec.importance_level in IMPORTANCE_LEVELS,
       f"importance_level must be token or sequence, got {spec.importance_level!r}")
  need(spec.clip_low >= 0 and spec.clip_high >= 0, "clip_low and clip_high must be >= 0")
  need(spec.kl_coef >= 0, f"kl_coef must be >= 0, got {spec.kl_coef}")
  need(spec.kl_estimator in ("k1", "k2", "k3"), f"kl_estimator must be k1, k2 or k3, got "
       f"{spec.kl_estimator!r}")
  need(spec.kl_in in ("loss", "reward"), f"kl_in must be loss or reward, got {spec.kl_in!r}")
  need(spec.kl_in == "loss" or spec.advantage.startswith("reinforce++"),
       "kl_in=reward puts a per-token KL in the reward: only the per-token REINFORCE++ "
       "advantages carry it (grpo.advantage=reinforce++ or reinforce++_baseline)")
  need(0.0 <= spec.ref_ema <= 1.0, f"ref_ema must be in [0, 1], got {spec.ref_ema}")
  need(spec.ref_ema == 0 or spec.kl_coef > 0, "ref_ema moves a reference, but kl_coef=0 "
       "uses none: set grpo.kl_coef > 0")


def uses_reference(spec: GRPOSpec) -> bool:
  return spec.kl_coef > 0


@flax.struct.dataclass
class GroupExperience:
  """What the update reads: the rollout, its old log-probs and per-token advantages."""

  sequence: jax.Array       # [B, P + N]
  sequence_mask: jax.Array  # [B, P + N]
  mask: jax.Array           # [B, N] response tokens that count (filters applied)
  old_logps: jax.Array      # [B, N] at the temperature, on the sampler's support
  advantages: jax.Array     # [B] per sequence, or [B, N] per token (REINFORCE++)
  ref_logps: jax.Array | None = None     # [B, N] when the KL is in the loss
  kept_counts: jax.Array | None = None   # [B, N] the sampler's support


def group_advantages(spec: GRPOSpec, rewards, mask, token_rewards=None) -> jax.Array:
  """Advantages of prompt-major groups of ``group_size`` rows: ``[B]`` per sequence (GRPO,
  RLOO: TRL's metric convention, GSPO's sequence ratio) or ``[B, N]`` per token (REINFORCE++
  returns-to-go)."""
  G = spec.group_size
  if spec.advantage == "grpo":
    per_sequence = grpo_advantages(rewards, G, spec.advantage_eps, spec.scale_rewards)
  elif spec.advantage == "rloo":
    per_sequence = rloo_advantages(rewards, G)
  else:
    return reinforce_pp_advantages(rewards, mask, token_rewards=token_rewards,
                                   group_size=G if spec.advantage.endswith("baseline")
                                   else None)
  return per_sequence


def _group_filters(spec: GRPOSpec, rewards, has_eos):
  """Per-row keep flags [B] and their counts: zero-variance groups, truncated samples."""
  grouped = rewards.reshape(-1, spec.group_size)  # [P, G]
  zero_variance = jnp.all(grouped == grouped[:, :1], axis=1)  # [P]
  keep = jnp.ones(rewards.shape, bool)
  if spec.filter_zero_variance:
    keep &= ~jnp.repeat(zero_variance, spec.group_size)
  if spec.mask_truncated:
    keep &= has_eos
  return keep, {"rollout/zero_variance_groups": jnp.mean(zero_variance.astype(jnp.float32)),
                "rollout/truncated_fraction": jnp.mean((~has_eos).astype(jnp.float32)),
                "rollout/kept_fraction": jnp.mean(keep.astype(jnp.float32))}


@functools.partial(jax.jit, static_argnames=("config", "spec"))
def make_group_experience(config: TransformerConfig, spec: GRPOSpec, params, ref_params,
                          rollout: Rollout, rewards):
  """Old log-probs (one training-layout pass), reference log-probs, advantages, filters."""
  P = rollout.prompt_tokens.shape[1]
  T = spec.temperature
  logits = response_logits(config, params["policy"], rollout.sequence, rollout.sequence_mask,
                           P)
  logps = policy_logps(logits, rollout.sequence[:, P:], T, rollout.kept_counts)
  mask = rollout.response_mask.astype(jnp.float32)
  ref_logps = token_kl = None
  metrics = dict(logprob_mismatch(rollout.sampler_logps, logps, mask))
  if uses_reference(spec):
    ref_logps = response_logps(config, ref_params, rollout.sequence, rollout.sequence_mask, P,
                               T)
    k1 = jnp.where(mask > 0, logps - ref_logps, 0.0)
    metrics["rollout/kl"] = jnp.mean(k1.sum(axis=1))
    if spec.kl_in == "reward":
      token_kl, ref_logps = -spec.kl_coef * k1, None
  keep, filter_metrics = _group_filters(spec, rewards, rollout.has_eos)
  advantages = group_advantages(spec, rewards, mask, token_kl)
  mask = mask * keep[:, None]
  lengths = rollout.response_mask.sum(axis=1).astype(jnp.float32)
  metrics.update(filter_metrics, **{
      "rollout/reward": jnp.mean(rewards), "rollout/reward_std": jnp.std(rewards),
      "rollout/length": jnp.mean(lengths),
      "rollout/eos_fraction": jnp.mean(rollout.has_eos.astype(jnp.float32)),
      "rollout/entropy": masked_mean(entropy_from_logits(logits, T), rollout.response_mask),
      "rollout/advantage_abs_mean": masked_mean(
          jnp.abs(jnp.broadcast_to(advantages.reshape(advantages.shape[0], -1), mask.shape)),
          mask)})
  experience = GroupExperience(rollout.sequence, rollout.sequence_mask, mask,
                               jax.lax.stop_gradient(logps), advantages, ref_logps,
                               rollout.kept_counts)
  return experience, metrics


def grpo_loss(config: TransformerConfig, spec: GRPOSpec, params, batch: GroupExperience,
              tokens, sequences):
  P = batch.sequence.shape[1] - batch.mask.shape[1]
  logits = response_logits(config, params["policy"], batch.sequence, batch.sequence_mask, P)
  logps = policy_logps(logits, batch.sequence[:, P:], spec.temperature, batch.kept_counts)
  entropies = (entropy_from_logits(logits, spec.temperature) if spec.entropy_coef else None)
  in_loss = batch.ref_logps is not None
  loss, metrics = policy_gradient_loss(
      logps, batch.old_logps, batch.advantages, batch.mask, aggregation=spec.aggregation,
      importance_level=spec.importance_level, clip_low=spec.clip_low,
      clip_high=spec.clip_high, delta=spec.delta, cispo=spec.cispo,
      ref_logps=batch.ref_logps, kl_coef=spec.kl_coef if in_loss else 0.0,
      kl_estimator=spec.kl_estimator, entropies=entropies, entropy_coef=spec.entropy_coef,
      max_new_tokens=batch.mask.shape[1], denominator=tokens, sequence_denominator=sequences)
  return loss, {f"grpo/{k}": v for k, v in dict(metrics, loss=loss).items()}


@dataclasses.dataclass(frozen=True)
class GRPOObjective:
  """The policy-gradient loss as a ``training.step`` objective: every mean over the global
  minibatch (tokens, sequences), so ``loop.micro_batches`` changes no result."""

  config: TransformerConfig
  spec: GRPOSpec
  needs_reference = False

  def denominators(self, batch: GroupExperience) -> dict:
    # sequences that still count: a filtered group (zero variance, truncated) is dropped
    return {"tokens": jnp.maximum(batch.mask.sum(), 1.0),
            "sequences": jnp.maximum(jnp.sum(batch.mask.sum(axis=1) > 0), 1).astype(
                jnp.float32)}

  def loss(self, params, ref_params, batch: GroupExperience, denominators: dict):
    del ref_params
    return grpo_loss(self.config, self.spec, params, batch, denominators["tokens"],
                     denominators["sequences"])


@functools.partial(jax.jit, static_argnames=("config", "spec", "micro_batches"),
                   donate_argnums=(2,))
def grpo_minibatch_step(config, spec, state, batch: GroupExperience, micro_batches: int = 1):
  objective = GRPOObjective(config, spec)
  if state.base_params is not None:  # LoRA: gradients of the adapters only
    objective = LoraBound(objective, state.base_params, entry="policy")
  _, metrics, grads = accumulate_gradients(objective, state.params, None, batch,
                                           micro_batches)
  return state.apply_gradients(grads), metrics


@functools.partial(jax.jit, static_argnames=("size",))
def _minibatch(experience, rng, epoch, index, size: int):
  B = experience.sequence.shape[0]
  order = jax.random.permutation(jax.random.fold_in(rng, epoch), B)
  rows = jax.lax.dynamic_slice_in_dim(order, index * size, size)
  return jax.tree_util.tree_map(lambda x: x[rows], experience)


def grpo_update(config, spec: GRPOSpec, state, experience: GroupExperience, rng,
                micro_batches: int = 1):
  """``num_iterations`` passes of ``num_minibatches`` steps (one minibatch = the whole rollout
  when num_minibatches = 1, in rollout order); returns (state, metrics of every step)."""
  B = experience.sequence.shape[0]
  size = B // spec.num_minibatches
  history = []
  for epoch in range(spec.num_iterations):
    for index in range(spec.num_minibatches):
      batch = (experience if spec.num_minibatches == 1
               else _minibatch(experience, rng, epoch, index, size))
      state, metrics = grpo_minibatch_step(config, spec, state, batch, micro_batches)
      history.append(metrics)
  return state, history

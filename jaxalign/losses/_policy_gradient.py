"""Critic-free policy-gradient losses: GRPO and its 2025 variants (Dr. GRPO, DAPO, GSPO, CISPO).

One loss, ``policy_gradient_loss``, whose knobs are the axes along which the variants differ:
how per-token losses are aggregated, whether the importance ratio is per token or per
sequence, how it is clipped (asymmetric, two-sided, or CISPO's clipped stop-gradient weight),
the KL to a reference inside the loss, and an entropy bonus. Arrays are ``[B, T]`` aligned like
``ops.shifted_token_logprobs`` (entry ``t`` belongs to the decision that produced token ``t``;
``mask`` marks response tokens), as the PPO losses. TRL 1.16's ``GRPOTrainer`` loss types map
onto it (docs/algorithms.md, "Critic-free policy gradients"; tested in
tests/losses/test_trl_grpo_parity.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.losses._common import Metrics, denominator_counts, finish_metrics
from jaxalign.ops import kl_k1, kl_k2, kl_k3, masked_count, masked_mean, masked_sum, upcast

_MAX_LOG_RATIO = 20.0  # as ppo_policy_loss: e^20 ~ 5e8, finite
AGGREGATIONS = ("token_mean", "sequence_mean", "constant", "token_sum")
IMPORTANCE_LEVELS = ("token", "sequence")
_KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def _is_zero(coef) -> bool:
  return isinstance(coef, (int, float)) and coef == 0


@denominator_counts("mask")
def policy_gradient_loss(logps, old_logps, advantages, mask, *,
                         aggregation: str = "token_mean", importance_level: str = "token",
                         clip_low: float = 0.2, clip_high: float = 0.2,
                         delta: float | None = None, cispo: bool = False,
                         ref_logps=None, kl_coef=0.0, kl_estimator: str = "k3",
                         kl_importance_weight: bool = False,
                         entropies=None, entropy_coef=0.0,
                         max_new_tokens: int | None = None,
                         denominator=None, sequence_denominator=None
                         ) -> tuple[jax.Array, Metrics]:
  """The clipped policy-gradient loss of GRPO and its variants, as a loss to minimise.

  Importance ratio of token t of sequence i, at ``importance_level``:

    token:     rho_it = exp(logp_it - old_logp_it)                                  (GRPO, DAPO)
    sequence:  s_i = exp(mean_t (logp_it - old_logp_it)),  rho_it = sg[s_i] pi_it / sg[pi_it]

  The sequence level is GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv
  2507.18071, and its GSPO-token form): the value of ``rho_it`` is the length-
  normalised sequence ratio ``s_i`` on every token, and its gradient w.r.t. ``logp_it`` is
  ``s_i``, so with a per-sequence advantage the loss and its gradient are those of ``s_i A_i``
  (TRL's ``importance_sampling_level="sequence"``) under every aggregation.

  Per-token loss, ``A_it`` the advantage (``[B]`` broadcast over tokens, or ``[B, T]``):

    clip (default):  L_it = -min(min(rho_it, delta) A_it, clip(rho_it, 1 - eps_lo, 1 + eps_hi) A_it)
    cispo=True:      L_it = -sg[min(rho_it, 1 + eps_hi)] A_it logp_it

  with ``eps_lo = clip_low``, ``eps_hi = clip_high``.
  The clip is PPO's (Schulman et al. 2017, arXiv 1707.06347) as used by GRPO (Shao et al.
  2024, "DeepSeekMath", arXiv 2402.03300); ``clip_low != clip_high`` is DAPO's clip-higher (Yu
  et al. 2025, arXiv 2503.14476, recommends 0.2 / 0.28); ``delta`` (INTELLECT-2, arXiv
  2505.07291; TRL's ``delta``) bounds the unclipped ratio from above, two-sided clipping, so a
  negative advantage cannot push a token with a huge ratio without limit (take ``delta > 1 +
  clip_high``). CISPO (MiniMax-M1, arXiv 2506.13585) clips the importance weight instead
  and stops its gradient, so every token keeps a gradient ``-w A``; its upper bound is
  ``1 + clip_high`` (TRL's ``epsilon_high`` for ``loss_type="cispo"`` is that bound itself:
  ``clip_high = epsilon_high - 1``) and, as MiniMax-M1 and TRL, it has no lower bound
  (``clip_low`` is unused). The value of the CISPO loss uses ``logp`` itself, as TRL.

  KL to a reference (``ref_logps`` given): ``L_it += kl_coef * k_it`` with the estimator
  ``kl_estimator`` (``"k3"``: ``exp(ref - logp) - (ref - logp) - 1``, the "low-variance" k3 of
  GRPO and TRL's ``per_token_kl``; ``"k1"``, ``"k2"``: ``ops``), added before aggregation as
  TRL. ``kl_importance_weight=True`` multiplies ``k_it`` by the ratio (token level: ``rho_it``;
  sequence level: ``s_i``, both with their full gradient), the unbiased reverse-KL gradient of
  DeepSeek-V3.2 (arXiv 2512.02556), TRL's ``use_bias_correction_kl`` (on by default in TRL
  1.16, off here).

  Aggregation of ``sum`` over the masked tokens, with ``N`` the number of response tokens and
  ``S`` the number of sequences (rows with at least one response token), both of the global
  batch when ``denominator`` / ``sequence_denominator`` are given:

    token_mean:     sum_it L_it / N                    (DAPO; TRL's "dapo", "bnpo", "cispo")
    sequence_mean:  sum_i (sum_t L_it / n_i) / S        (original GRPO; TRL's "grpo")
    constant:       sum_it L_it / (S * max_new_tokens)  (Dr. GRPO, arXiv 2503.20783; "dr_grpo")
    token_sum:      sum_it L_it / S                     (sum over each sequence; TRL's "luspo")

  ``n_i`` is row i's token count (a row is never split). On a micro-batch, pass the whole
  batch's ``N`` as ``denominator`` and its ``S`` as ``sequence_denominator``: the micro-batch
  losses then add up to the whole batch's loss for every aggregation (tested). TRL counts every
  row in ``S`` (``size(0)``); the two differ only for rows with no response token.

  Entropy bonus (``entropies`` given): ``loss -= entropy_coef * mean_t H_it``, a token mean
  over ``N`` whatever the aggregation, as TRL's ``entropy_coef``.

  ``old_logps`` and ``advantages`` are constants (``stop_gradient``); gradients reach
  ``logps`` (through the ratio, the CISPO term and the KL) and ``entropies``. Padding
  (``mask == 0``) never contributes, even where it holds inf or NaN. The log ratio is clipped
  to +-20 before the exponential.

  Args:
    logps, old_logps: ``[B, T]`` token log-probs under the policy and the sampling policy.
    advantages: ``[B]`` per sequence or ``[B, T]`` per token.
    mask: ``[B, T]`` response tokens (0/1, or non-negative weights).
    aggregation: one of ``AGGREGATIONS``. importance_level: ``"token"`` or ``"sequence"``.
    clip_low, clip_high: the clip range ``[1 - clip_low, 1 + clip_high]``.
    delta: upper bound of the unclipped ratio, or ``None``.
    cispo: CISPO's surrogate instead of the clipped one.
    ref_logps: ``[B, T]`` reference token log-probs, or ``None`` (no KL term).
    kl_coef: beta of the KL term (a float or a scalar array). kl_estimator: k1, k2 or k3.
    kl_importance_weight: weight the KL by the importance ratio (TRL's bias correction).
    entropies: ``[B, T]`` token entropies (``ops.shifted_entropy_from_logits``), or ``None``.
    entropy_coef: weight of the entropy bonus.
    max_new_tokens: the generation budget; required by ``aggregation="constant"``.
    denominator: global number of response tokens ``N``.
    sequence_denominator: global number of sequences ``S``.

  Returns:
    ``(loss, metrics)``, TRL's names where TRL has the quantity: ``policy_loss`` (the aggregated
    ``L``, KL term included, entropy bonus not: TRL's ``policy_loss``), ``clip_ratio/low_mean``
    (share with ``rho < 1 - clip_low`` and ``A < 0``: the lower clip is active),
    ``clip_ratio/high_mean`` (``rho > 1 + clip_high`` and ``A > 0``), ``clip_ratio/region_mean``
    (either), or with ``cispo`` ``cispo_clip_ratio`` (``rho > 1 + clip_high`` and ``A > 0``);
    ``ratio_mean``, ``approx_kl`` (``0.5 (logp - old_logp)^2``, token mean), ``kl`` (token mean
    of the, possibly weighted, ``k_it``; with a reference) and ``entropy`` (with entropies).
    The clip shares and ``ratio_mean`` are means over tokens, or over sequences where the
    ratio and the advantage are both per sequence (sequence level, ``[B]`` advantages), as
    TRL; each is a sum divided by the global count, so micro-batches add up.
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
  if importance_level not in IMPORTANCE_LEVELS:
    raise ValueError(f"importance_level must be one of {IMPORTANCE_LEVELS}, "
                     f"got {importance_level!r}")
  if kl_estimator not in _KL_ESTIMATORS:
    raise ValueError(f"kl_estimator must be one of {tuple(_KL_ESTIMATORS)}, got {kl_estimator!r}")
  if aggregation == "constant" and max_new_tokens is None:
    raise ValueError("aggregation='constant' (Dr. GRPO) divides by max_new_tokens: pass it")
  if ref_logps is None and not _is_zero(kl_coef):
    raise ValueError("kl_coef != 0 needs ref_logps")
  if entropies is None and not _is_zero(entropy_coef):
    raise ValueError("entropy_coef != 0 needs entropies")

  mask = upcast(mask)
  valid = mask != 0  # [B, T]
  # padding becomes 0 before any arithmetic: no inf * 0 in values or gradients
  clean = lambda x: jnp.where(valid, upcast(x), 0.0)
  logps = clean(logps)
  old_logps = jax.lax.stop_gradient(clean(old_logps))
  advantages = jax.lax.stop_gradient(upcast(advantages))
  per_sequence_advantages = advantages.ndim == 1
  if per_sequence_advantages:
    advantages = advantages[:, None]
  advantages = jnp.broadcast_to(advantages, logps.shape)  # [B, T]

  has_tokens = (masked_count(mask, axis=1) > 0).astype(logps.dtype)  # [B]
  tokens_mean = lambda x: masked_mean(x, mask, denominator)
  if sequence_denominator is None:
    sequences = jnp.maximum(has_tokens.sum(), 1.0)
  else:
    sequences = upcast(sequence_denominator).astype(logps.dtype)
  sequences_mean = lambda x: jnp.sum(x * has_tokens) / sequences  # x [B]

  log_ratio = jnp.clip(logps - old_logps, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # [B, T]
  if importance_level == "token":
    ratio = jnp.exp(log_ratio)  # [B, T]
    kl_weight = ratio
  else:
    sequence_ratio = jnp.exp(masked_mean(log_ratio, mask, axis=1))  # s_i [B], full gradient
    # GSPO-token: value s_i on every token, d rho_it / d logp_it = s_i
    ratio = (jax.lax.stop_gradient(sequence_ratio)[:, None]
             * jnp.exp(log_ratio - jax.lax.stop_gradient(log_ratio)))
    kl_weight = sequence_ratio[:, None]
  # the clip metrics' unit: sequences when ratio and advantage are both per sequence
  if importance_level == "sequence" and per_sequence_advantages:
    share = lambda flags: sequences_mean(flags[:, 0].astype(logps.dtype))
    ratio_mean = sequences_mean(jax.lax.stop_gradient(ratio[:, 0]))
  else:
    share = lambda flags: tokens_mean(flags.astype(logps.dtype))
    ratio_mean = tokens_mean(jax.lax.stop_gradient(ratio))

  value = jax.lax.stop_gradient(ratio)
  metrics = {}
  if cispo:
    weight = jax.lax.stop_gradient(jnp.minimum(ratio, 1.0 + clip_high))
    per_token = -weight * advantages * logps
    metrics["cispo_clip_ratio"] = share((value > 1.0 + clip_high) & (advantages > 0))
  else:
    unclipped = ratio if delta is None else jnp.minimum(ratio, delta)
    clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = jnp.maximum(-advantages * unclipped, -advantages * clipped)
    unclipped_value = jax.lax.stop_gradient(unclipped)
    low = (unclipped_value < 1.0 - clip_low) & (advantages < 0)
    high = (unclipped_value > 1.0 + clip_high) & (advantages > 0)
    metrics.update({"clip_ratio/low_mean": share(low), "clip_ratio/high_mean": share(high),
                    "clip_ratio/region_mean": share(low | high)})

  if ref_logps is not None:
    kl = _KL_ESTIMATORS[kl_estimator](logps, clean(ref_logps))  # [B, T]
    if kl_importance_weight:
      kl = kl * kl_weight
    per_token = per_token + upcast(kl_coef) * kl
    metrics["kl"] = tokens_mean(kl)

  if aggregation == "token_mean":
    loss = tokens_mean(per_token)
  elif aggregation == "sequence_mean":
    loss = sequences_mean(masked_mean(per_token, mask, axis=1))
  else:
    total = masked_sum(per_token, mask)
    scale = sequences * max_new_tokens if aggregation == "constant" else sequences
    loss = total / scale
  metrics["policy_loss"] = loss

  if entropies is not None:
    entropy = tokens_mean(clean(entropies))
    loss = loss - upcast(entropy_coef) * entropy
    metrics["entropy"] = entropy
  metrics["ratio_mean"] = ratio_mean
  metrics["approx_kl"] = tokens_mean(0.5 * jnp.square(log_ratio))
  return loss, finish_metrics(metrics)

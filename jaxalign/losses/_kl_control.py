"""The KL penalty of RLHF: per-token penalised rewards and the KL coefficient controllers.

Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (arXiv 1909.08593),
Sec. 2.2: the reward is ``R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x))``, the score
``r`` paid at the end of the response and the penalty per token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxalign.losses._common import Metrics, denominator_counts, finish_metrics, pair_mean
from jaxalign.ops import kl_k1, kl_k3, last_true_index, upcast


@denominator_counts("sequences")
def kl_penalized_rewards(logps, ref_logps, mask, scores, kl_coef, *, estimator: str = "k1",
                         missing_eos_penalty: float | None = None, has_eos=None,
                         denominator=None) -> tuple[jax.Array, Metrics]:
  """Per-token rewards ``-kl_coef * kl_t``, plus the sequence score at the last real token.

  Args:
    logps, ref_logps: ``[B, T]`` token log-probs of the sampled response (policy, reference).
    mask: ``[B, T]`` response tokens.
    scores: ``[B]`` reward-model scores of the responses.
    kl_coef: the penalty's beta (a float or a controller's ``value``).
    estimator: per-token KL estimate, ``"k1"`` (``logp - ref_logp``, TRL's default) or
      ``"k3"`` (``ops.kl_k3``).
    missing_eos_penalty: subtracted from the score of rows whose ``has_eos [B]`` is False
      (responses truncated by the length budget), as TRL's ``missing_eos_penalty``.
    denominator: global number of sequences for the metric means.

  Returns:
    ``(rewards [B, T], metrics)`` with TRL's ``objective/kl`` (mean over sequences of the summed
    KL), ``objective/non_score_reward``, ``objective/scores`` and ``objective/rlhf_reward``
    (score plus summed penalty).
  """
  mask = upcast(mask)
  if estimator == "k1":
    kl = kl_k1(logps, ref_logps)
  elif estimator == "k3":
    kl = kl_k3(logps, ref_logps)
  else:
    raise ValueError(f"estimator must be 'k1' or 'k3', got {estimator!r}")
  kl = jnp.where(mask != 0, kl, 0.0)  # [B, T]
  non_score = -upcast(kl_coef) * kl
  scores = upcast(scores)
  if missing_eos_penalty is not None:
    if has_eos is None:
      raise ValueError("missing_eos_penalty needs has_eos")
    scores = jnp.where(jnp.asarray(has_eos, bool), scores, scores - missing_eos_penalty)
  has_response = (mask != 0).any(axis=1)  # [B]
  at_last = jax.nn.one_hot(last_true_index(mask), mask.shape[1], dtype=non_score.dtype)
  rewards = non_score + jnp.where(has_response, scores, 0.0)[:, None] * at_last
  mean = lambda x: pair_mean(x, has_response.astype(x.dtype), denominator)
  metrics = {"objective/kl": mean(kl.sum(axis=1)),
             "objective/non_score_reward": mean(non_score.sum(axis=1)),
             "objective/scores": mean(scores),
             "objective/rlhf_reward": mean(scores + non_score.sum(axis=1))}
  return rewards, finish_metrics(metrics)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FixedKLController:
  """A constant KL coefficient; ``update`` returns the state unchanged."""

  value: jax.Array | float

  def update(self, current_kl, n_steps) -> "FixedKLController":
    del current_kl, n_steps
    return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdaptiveKLController:
  """Ziegler et al. 2019's proportional controller driving the KL toward ``target``.

    e_t = clip(KL_t / target - 1, -0.2, 0.2)
    beta_{t+1} = beta_t * (1 + e_t * n_steps / horizon)

  ``value`` (beta) is a pytree leaf, ``target`` and ``horizon`` static, so a state passes
  through ``jit`` and checkpoints. ``n_steps`` is the number of samples (episodes) since the
  last update, as in the paper and TRL.
  """

  value: jax.Array | float
  target: float = dataclasses.field(metadata={"static": True}, default=6.0)
  horizon: float = dataclasses.field(metadata={"static": True}, default=10000.0)

  def update(self, current_kl, n_steps) -> "AdaptiveKLController":
    error = jnp.clip(upcast(current_kl) / self.target - 1.0, -0.2, 0.2)
    return dataclasses.replace(self, value=self.value * (1.0 + error * n_steps / self.horizon))

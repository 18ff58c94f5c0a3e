"""Reference-free preference losses on length-normalised log-probs: SimPO and ORPO.

Both take ``chosen_logps`` / ``rejected_logps [B]`` that are **averaged** over response tokens
(``sequence_logprobs(..., average=True)``), as the papers and TRL's CPOTrainer (``simpo``) and
ORPOTrainer do. Their implicit rewards are ``beta * logp`` (no reference), logged under TRL's
names ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``.
"""

from __future__ import annotations

import jax

from jaxalign.losses._common import (Metrics, denominator_counts, finish_metrics, pair_mean,
                                     reward_metrics)
from jaxalign.ops import log1mexp, upcast


@denominator_counts("pairs")
def simpo_loss(chosen_logps, rejected_logps, *, beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0, weights=None,
               denominator=None) -> tuple[jax.Array, Metrics]:
  """SimPO: ``-log sigmoid(beta (avg logp_w - avg logp_l) - gamma)``.

  Meng, Xia, Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"
  (arXiv 2405.14734), Eq. 6. ``gamma`` is the target reward margin (TRL's ``simpo_gamma``; the
  paper often quotes ``gamma / beta``). With ``label_smoothing = eps`` the loss is
  ``-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)`` as in TRL's CPOTrainer ``loss_type="simpo"``.
  Expects length-normalised log-probs.
  """
  chosen, rejected = upcast(chosen_logps), upcast(rejected_logps)
  logits = beta * (chosen - rejected) - gamma  # [B]
  per_pair = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)
              - label_smoothing * jax.nn.log_sigmoid(-logits))
  loss = pair_mean(per_pair, weights, denominator)
  metrics = reward_metrics(beta * chosen, beta * rejected, chosen, rejected, weights, denominator)
  return loss, finish_metrics(metrics)


@denominator_counts("pairs")
def orpo_loss(chosen_logps, rejected_logps, nll_loss, *, beta: float = 0.1, weights=None,
              denominator=None) -> tuple[jax.Array, Metrics]:
  """ORPO: ``L = L_SFT - beta * mean log sigmoid(log odds(y_w) - log odds(y_l))``.

  Hong, Lee, Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
  (arXiv 2403.07691), Eqs. 4-7, with ``odds(y) = P(y) / (1 - P(y))`` and ``log P(y)`` the
  length-normalised log-prob, so

    log odds(y_w) - log odds(y_l) = (lp_w - lp_l) - (log(1 - e^{lp_w}) - log(1 - e^{lp_l})).

  Args:
    chosen_logps, rejected_logps: ``[B]`` **averaged** response log-probs.
    nll_loss: scalar SFT term on the chosen responses, e.g. ``sft_loss(chosen_token_logps,
      chosen_loss_mask)[0]`` (TRL: the token-level cross-entropy mean on chosen responses).
    beta: ORPO's lambda (TRL's ``beta``).
    weights, denominator: per-pair weights and global pair count for the odds-ratio mean.

  Returns:
    ``(loss, metrics)``; metrics add TRL's ``nll_loss``, ``log_odds_ratio`` (mean of
    ``log sigmoid(log odds ratio)``) and ``log_odds_chosen`` (mean log odds ratio).
    Averaged log-probs above ``-1e-6`` are clamped there (``ops.log1mexp``).
  """
  chosen, rejected = upcast(chosen_logps), upcast(rejected_logps)
  log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))  # [B]
  log_odds_ratio = pair_mean(jax.nn.log_sigmoid(log_odds), weights, denominator)
  nll_loss = upcast(nll_loss)
  loss = nll_loss - beta * log_odds_ratio
  metrics = reward_metrics(beta * chosen, beta * rejected, chosen, rejected, weights, denominator)
  metrics.update(nll_loss=nll_loss, log_odds_ratio=log_odds_ratio,
                 log_odds_chosen=pair_mean(log_odds, weights, denominator))
  return loss, finish_metrics(metrics)

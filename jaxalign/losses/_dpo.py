"""The DPO family on sequence log-probs: DPO / cDPO, robust DPO, IPO, hinge (SLiC).

Inputs are ``[B]`` arrays, one entry per preference pair (prompt x, chosen y_w, rejected y_l):
``chosen_logps = log pi(y_w | x)`` and so on, summed over response tokens (``sequence_logprobs``
with ``average=False``) unless a docstring says otherwise. With the log-ratio difference

  h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)],

each loss is a function of ``h`` averaged over pairs. Metrics follow TRL's DPOTrainer:
``rewards/chosen = mean(beta * (log pi(y_w) - log pi_ref(y_w)))``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected``.

Common knobs: ``beta`` (the KL strength; IPO's tau), ``reference_free`` (pi_ref uniform, the
``ref_*`` arguments unused), ``weights [B]`` per-pair weights (0 drops a padding row) and
``denominator`` (the global number of pairs when a batch is split).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.losses._common import (Metrics, denominator_counts, log_ratios,
                                     preference_output)
from jaxalign.ops import upcast


@denominator_counts("pairs")
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
             beta: float = 0.1, label_smoothing: float = 0.0, reference_free: bool = False,
             weights=None, denominator=None) -> tuple[jax.Array, Metrics]:
  """DPO: ``-log sigmoid(beta h)``; with label smoothing eps, conservative DPO (cDPO).

  ``L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``.

  Rafailov et al. 2023, "Direct Preference Optimization" (arXiv 2305.18290), Eq. 7; cDPO from
  E. Mitchell, "A note on DPO with noisy preferences and relationship to IPO" (2023): the label
  is flipped with probability eps. With ``label_smoothing=0`` this is TRL's ``loss_type="sigmoid"``.
  """
  chosen_logratios, rejected_logratios = log_ratios(
      chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reference_free)
  logits = beta * (chosen_logratios - rejected_logratios)  # [B]
  per_pair = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)
              - label_smoothing * jax.nn.log_sigmoid(-logits))
  return preference_output(per_pair, beta, chosen_logratios, rejected_logratios, chosen_logps,
                           rejected_logps, weights, denominator)


@denominator_counts("pairs")
def robust_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps=None,
                    ref_rejected_logps=None, *, beta: float = 0.1, label_smoothing: float = 0.1,
                    reference_free: bool = False, weights=None,
                    denominator=None) -> tuple[jax.Array, Metrics]:
  """Robust DPO: the unbiased loss under labels flipped with probability eps in [0, 1/2).

  ``L = [-(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h)] / (1 - 2 eps)``.

  Chowdhury, Kini, Natarajan 2024, "Provably Robust DPO" (arXiv 2403.00409); TRL's
  ``loss_type="robust"`` with ``label_smoothing = eps``. Unlike cDPO, the flipped term enters
  with a minus sign: the loss is unbounded below, as in the paper.
  """
  if not 0.0 <= label_smoothing < 0.5:
    raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
  chosen_logratios, rejected_logratios = log_ratios(
      chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reference_free)
  logits = beta * (chosen_logratios - rejected_logratios)  # [B]
  per_pair = ((-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)
               + label_smoothing * jax.nn.log_sigmoid(-logits)) / (1.0 - 2.0 * label_smoothing))
  return preference_output(per_pair, beta, chosen_logratios, rejected_logratios, chosen_logps,
                           rejected_logps, weights, denominator)


@denominator_counts("pairs")
def ipo_loss(chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
             beta: float = 0.1, chosen_lengths=None, rejected_lengths=None,
             reference_free: bool = False, weights=None,
             denominator=None) -> tuple[jax.Array, Metrics]:
  """IPO: ``(h - 1 / (2 tau))^2`` with ``tau = beta``.

  Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences" (arXiv 2310.12036), Eq. 17. Its minimiser keeps ``h = 1 / (2 tau)`` (times
  ``2p - 1`` for preference probability p) instead of driving ``h`` to infinity like DPO.

  Which log-probs: the paper uses sequence log-probs; TRL's ``loss_type="ipo"`` divides each
  sequence's log-ratio by its number of response tokens (floored at 1). Two ways to get TRL's
  behaviour: pass length-normalised log-probs (``sequence_logprobs(average=True)`` for the
  policy and the reference), or pass summed log-probs plus ``chosen_lengths`` and
  ``rejected_lengths [B]`` (the loss then normalises, and the reward metrics stay on the summed
  log-ratios exactly as TRL logs them). The trainer decides which.
  """
  chosen_logratios, rejected_logratios = log_ratios(
      chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reference_free)
  chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
  if (chosen_lengths is None) != (rejected_lengths is None):
    raise ValueError("pass both chosen_lengths and rejected_lengths, or neither")
  if chosen_lengths is not None:
    chosen_scores = chosen_scores / jnp.maximum(upcast(chosen_lengths), 1.0)
    rejected_scores = rejected_scores / jnp.maximum(upcast(rejected_lengths), 1.0)
  per_pair = jnp.square(chosen_scores - rejected_scores - 1.0 / (2.0 * beta))  # [B]
  return preference_output(per_pair, beta, chosen_logratios, rejected_logratios, chosen_logps,
                           rejected_logps, weights, denominator)


@denominator_counts("pairs")
def hinge_loss(chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
               beta: float = 0.1, reference_free: bool = False, weights=None,
               denominator=None) -> tuple[jax.Array, Metrics]:
  """Hinge (SLiC) loss ``max(0, 1 - beta h)``.

  Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback" (arXiv
  2305.10425), rank calibration loss ``max(0, delta - log pi(y_w) + log pi(y_l))``; TRL's
  ``loss_type="hinge"`` (used here) puts it on reference log-ratios and scales by beta, i.e.
  margin ``delta = 1 / beta``. ``reference_free=True`` recovers SLiC's form up to that scale.
  """
  chosen_logratios, rejected_logratios = log_ratios(
      chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reference_free)
  per_pair = jax.nn.relu(1.0 - beta * (chosen_logratios - rejected_logratios))  # [B]
  return preference_output(per_pair, beta, chosen_logratios, rejected_logratios, chosen_logps,
                           rejected_logps, weights, denominator)

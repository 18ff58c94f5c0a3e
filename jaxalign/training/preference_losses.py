"""The one visible table from loss names (CLI, configs) to loss terms of the DPO family.

Each entry says which log-probs the loss expects (summed or length-normalised) and whether
it needs a reference model. ``preference_loss("dpo", beta=0.1)`` returns a ``LossSpec``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxalign.losses import (LossTerm, dpo_loss, hinge_loss, ipo_loss, kto_loss, orpo_loss,
                             robust_dpo_loss, sft_loss, simpo_loss, term, weighted_sum,
                             with_statistics)
from jaxalign.ops import masked_mean, upcast


@dataclasses.dataclass(frozen=True)
class LossSpec:
  loss_term: LossTerm
  average_logps: bool
  needs_reference: bool


def _kto_logratio_mean(q) -> dict[str, jax.Array]:
  """``{"kto_logratio_mean": sum_i w_i (r_w,i + r_l,i) / (2 W)}``, ``r = log pi - log pi_ref``.

  The weighted mean log-ratio over both responses of every pair, ``W`` the global (weighted)
  pair count ``q["denominator"]``; a sum over rows / ``W``, so micro-batches add up to it.
  """
  chosen = upcast(q["chosen_logps"]) - upcast(q["ref_chosen_logps"])  # [B]
  rejected = upcast(q["rejected_logps"]) - upcast(q["ref_rejected_logps"])  # [B]
  weights = q.get("weights", jnp.ones_like(chosen))
  return {"kto_logratio_mean": 0.5 * masked_mean(chosen + rejected, weights,
                                                 q.get("denominator"))}


def _kto_term(beta: float, desirable_weight: float = 1.0,
              undesirable_weight: float = 1.0) -> LossTerm:
  """KTO on pairs: chosen responses are desirable, rejected undesirable.

  The reference point ``z_0 = max(0, kto_logratio_mean)`` is the weighted mean
  policy/reference log-ratio of the global batch's responses (detached), a stand-in for TRL's
  mismatched-pair estimate that needs no mismatched completions. Under gradient accumulation
  it is a statistic of the whole batch (``with_statistics``), never of one micro-batch. Every
  pair holds one desirable and one undesirable example, so both counts are the pair count
  ``W`` and the loss is a mean over ``2 W`` examples.
  """
  def loss_term(q):
    logps = jnp.concatenate([q["chosen_logps"], q["rejected_logps"]])  # [2B]
    ref_logps = jnp.concatenate([q["ref_chosen_logps"], q["ref_rejected_logps"]])
    B = q["chosen_logps"].shape[0]
    weights = q.get("weights")
    weights = None if weights is None else jnp.concatenate([weights, weights])
    pairs = q.get("denominator")
    z0 = jnp.maximum(q["kto_logratio_mean"], 0.0)
    return kto_loss(logps, ref_logps, jnp.arange(2 * B) < B, z0, beta=beta,
                    desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                    weights=weights, denominator=None if pairs is None else 2.0 * pairs,
                    desirable_denominator=pairs, undesirable_denominator=pairs)
  return with_statistics(loss_term, _kto_logratio_mean)


def _nll_term() -> LossTerm:
  return term(sft_loss, rename={"token_logps": "chosen_token_logps",
                                "loss_mask": "chosen_loss_mask",
                                "denominator": "chosen_token_denominator"})


_TABLE: dict[str, Callable[..., LossSpec]] = {
    "dpo": lambda beta=0.1, **k: LossSpec(term(dpo_loss, beta=beta, **k), False, True),
    "cdpo": lambda beta=0.1, label_smoothing=0.1, **k: LossSpec(
        term(dpo_loss, beta=beta, label_smoothing=label_smoothing, **k), False, True),
    "robust": lambda beta=0.1, label_smoothing=0.1, **k: LossSpec(
        term(robust_dpo_loss, beta=beta, label_smoothing=label_smoothing, **k), False, True),
    # TRL's IPO: log-ratios divided by response length; "ipo_sum" is the paper's Eq. 17.
    "ipo": lambda beta=0.1, **k: LossSpec(term(ipo_loss, beta=beta, **k), False, True),
    "ipo_sum": lambda beta=0.1, **k: LossSpec(term(
        ipo_loss, rename={"chosen_lengths": None, "rejected_lengths": None}, beta=beta, **k),
        False, True),
    "hinge": lambda beta=0.1, **k: LossSpec(term(hinge_loss, beta=beta, **k), False, True),
    "simpo": lambda beta=2.0, gamma=0.5, **k: LossSpec(
        term(simpo_loss, beta=beta, gamma=gamma, **k), True, False),
    "orpo": lambda beta=0.1, **k: LossSpec(term(orpo_loss, beta=beta, **k), True, False),
    "kto": lambda beta=0.1, **k: LossSpec(_kto_term(beta, **k), False, True),
    # RPO: DPO plus alpha times the NLL of the chosen responses (Pang et al. 2024).
    "rpo": lambda beta=0.1, alpha=1.0, **k: LossSpec(weighted_sum({
        "dpo": term(dpo_loss, beta=beta, **k), "nll": (alpha, _nll_term())}), False, True),
}
LOSS_NAMES = tuple(_TABLE)


def preference_loss(name: str, **knobs) -> LossSpec:
  """The loss called ``name`` with its knobs (beta, label_smoothing, gamma, alpha...)."""
  if name not in _TABLE:
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
  return _TABLE[name](**knobs)

"""The one visible table from loss names (CLI, configs) to loss terms of the DPO family.

Each entry says which knobs the loss takes and their defaults (``LOSS_DEFAULTS``, from the
papers and TRL: docs/algorithms.md), which log-probs it expects (summed or length-normalised)
and whether it needs a reference model. ``preference_loss("simpo")`` returns a ``LossSpec``
at SimPO's own beta 2.0 and gamma 0.5; ``loss_knobs`` resolves knobs in this one place.
"""

from __future__ import annotations

import dataclasses
import functools
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
  pair count ``q["pair_denominator"]``; a sum over rows / ``W``, so micro-batches add up.
  """
  chosen = upcast(q["chosen_logps"]) - upcast(q["ref_chosen_logps"])  # [B]
  rejected = upcast(q["rejected_logps"]) - upcast(q["ref_rejected_logps"])  # [B]
  weights = q.get("weights", jnp.ones_like(chosen))
  return {"kto_logratio_mean": 0.5 * masked_mean(chosen + rejected, weights,
                                                 q.get("pair_denominator"))}


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
    pairs = q.get("pair_denominator")
    z0 = jnp.maximum(q["kto_logratio_mean"], 0.0)
    return kto_loss(logps, ref_logps, jnp.arange(2 * B) < B, z0, beta=beta,
                    desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                    weights=weights, denominator=None if pairs is None else 2.0 * pairs,
                    desirable_denominator=pairs, undesirable_denominator=pairs)
  return with_statistics(loss_term, _kto_logratio_mean)


def _nll_term() -> LossTerm:
  """``L_NLL(y_w) = -sum m log pi / sum m`` over the chosen tokens of the global batch: the
  README's term as written (``term`` divides by ``chosen_loss_mask_denominator``)."""
  return term(sft_loss, rename={"token_logps": "chosen_token_logps",
                                "loss_mask": "chosen_loss_mask"})


def _rpo_term(alpha: float, **knobs) -> LossTerm:
  """RPO (Pang et al. 2024): ``L_DPO + alpha L_NLL(y_w)``."""
  return weighted_sum({"dpo": term(dpo_loss, **knobs), "nll": (alpha, _nll_term())})


@dataclasses.dataclass(frozen=True)
class _Loss:
  build: Callable[..., LossTerm]  # knobs -> loss term
  defaults: dict                  # every knob the loss takes, with its default
  average_logps: bool = False
  reference: bool = True          # needs a reference model (unless reference_free=True)


_REF = {"reference_free": False}  # log pi_ref = 0: no reference model loaded or run
_TABLE: dict[str, _Loss] = {
    "dpo": _Loss(functools.partial(term, dpo_loss), {"beta": 0.1, **_REF}),
    "cdpo": _Loss(functools.partial(term, dpo_loss),
                  {"beta": 0.1, "label_smoothing": 0.1, **_REF}),
    "robust": _Loss(functools.partial(term, robust_dpo_loss),
                    {"beta": 0.1, "label_smoothing": 0.1, **_REF}),
    # TRL's IPO: log-ratios divided by response length; "ipo_sum" is the paper's Eq. 17.
    "ipo": _Loss(functools.partial(term, ipo_loss), {"beta": 0.1, **_REF}),
    "ipo_sum": _Loss(functools.partial(term, ipo_loss, rename={"chosen_lengths": None,
                                                               "rejected_lengths": None}),
                     {"beta": 0.1, **_REF}),
    "hinge": _Loss(functools.partial(term, hinge_loss), {"beta": 0.1, **_REF}),
    "simpo": _Loss(functools.partial(term, simpo_loss),
                   {"beta": 2.0, "gamma": 0.5, "label_smoothing": 0.0}, True, False),
    "orpo": _Loss(functools.partial(term, orpo_loss), {"beta": 0.1}, True, False),
    "kto": _Loss(_kto_term, {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}),
    # RPO: DPO plus alpha times the NLL of the chosen responses (Pang et al. 2024).
    "rpo": _Loss(_rpo_term, {"beta": 0.1, "alpha": 1.0, **_REF}),
}
LOSS_NAMES = tuple(_TABLE)
LOSS_DEFAULTS = {name: dict(entry.defaults) for name, entry in _TABLE.items()}


def _entry(name: str) -> _Loss:
  if name not in _TABLE:
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
  return _TABLE[name]


def loss_knobs(name: str, **given) -> dict:
  """Every knob of loss ``name``: its defaults (``LOSS_DEFAULTS``) updated by ``given``.

  ``None`` means "the loss's default" (and ``reference_free=False`` is the default of every
  loss); a knob given that the loss does not take is an error naming it.
  """
  entry = _entry(name)
  given = {k: v for k, v in given.items()
           if v is not None and not (k == "reference_free" and v is False)}
  unused = sorted(set(given) - set(entry.defaults))
  if unused:
    raise ValueError(f"loss {name!r} does not use {', '.join(unused)} (its knobs: "
                     f"{', '.join(entry.defaults)})")
  return {**entry.defaults, **given}


def preference_loss(name: str, **knobs) -> LossSpec:
  """The loss called ``name`` with its knobs (``loss_knobs``: unset ones at their defaults)."""
  entry = _entry(name)
  knobs = loss_knobs(name, **knobs)
  return LossSpec(entry.build(**knobs), entry.average_logps,
                  entry.reference and not knobs.get("reference_free", False))

"""Composing losses: a weighted sum of loss terms is itself a loss term.

A *loss term* is a callable ``quantities -> (loss, metrics)`` where ``quantities`` is a dict of
named arrays (a "batch of quantities": sequence log-probs, masks, rewards...). ``term`` turns
any loss function of this package into one; ``weighted_sum`` adds terms and prefixes their
metrics. RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", arXiv
2404.19733: DPO plus ``alpha`` times the NLL of the chosen response) in one line::

  rpo = weighted_sum({
      "dpo": term(dpo_loss, beta=0.1),
      "nll": (alpha, term(sft_loss, rename={"token_logps": "chosen_token_logps",
                                            "loss_mask": "chosen_loss_mask"})),
  })
  loss, metrics = rpo({"chosen_logps": ..., "rejected_logps": ..., "ref_chosen_logps": ...,
                       "ref_rejected_logps": ..., "chosen_token_logps": ...,
                       "chosen_loss_mask": ...})
  # metrics: "loss", "dpo/loss", "dpo/rewards/chosen", ..., "nll/loss", "nll/nll", ...

Denominators are bound by unit, not by name: DPO's ``denominator`` is the quantity
``pair_denominator`` (global pair count) and the NLL's the global count of the mask it
reads, ``chosen_loss_mask_denominator`` (chosen tokens), so the sum above is right on a
micro-batch of ``PreferenceObjective`` as written (``denominator_quantity``).

A term whose loss needs a statistic of the whole batch (KTO's reference point) declares it
with ``with_statistics``; an objective computes it over every micro-batch before the gradient
pass and hands it in as a quantity (``jaxalign.training.step.accumulate_gradients``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax

Quantities = Mapping[str, Any]
LossTerm = Callable[[Quantities], tuple[jax.Array, dict[str, jax.Array]]]
Statistics = Callable[[Quantities], dict[str, jax.Array]]


_UNITS = {"pairs": "pair_denominator", "examples": "example_denominator",
          "sequences": "sequence_denominator"}


def denominator_quantity(loss_fn: Callable, rename: Mapping[str, str | None] | None = None
                         ) -> str | None:
  """The quantity ``term`` binds ``loss_fn``'s ``denominator`` to, from what it counts.

  A loss declares it (``losses._common.denominator_counts``): a unit maps to a count of that
  unit, ``"pairs" -> "pair_denominator"`` (``"examples"``, ``"sequences"`` likewise); a mask
  argument ``m`` maps to the global number of ones of the quantity ``m`` is bound to:
  ``sft_loss`` with ``rename={"loss_mask": "chosen_loss_mask"}`` divides by
  ``chosen_loss_mask_denominator`` (chosen tokens), never by a count of pairs.
  """
  rename = dict(rename or {})
  if "denominator" in rename:
    return rename["denominator"]
  what = getattr(loss_fn, "denominator_counts", None)
  if what is None:
    raise TypeError(f"{getattr(loss_fn, '__name__', loss_fn)} takes a denominator but does "
                    f"not declare what it counts (losses._common.denominator_counts): pass "
                    f"rename={{'denominator': <quantity>}}, e.g. 'pair_denominator', or None")
  if what in _UNITS:
    return _UNITS[what]
  mask = rename.get(what, what)
  return None if mask is None else f"{mask}_denominator"


def term(loss_fn: Callable, /, rename: Mapping[str, str | None] | None = None,
         **knobs) -> LossTerm:
  """A loss term calling ``loss_fn`` with arguments looked up by name in the quantities.

  Args:
    loss_fn: a loss of this package (or any function returning ``(loss, metrics)``).
    rename: argument name -> quantity name, for arguments whose quantity has another name;
      ``None`` never binds that argument from the quantities (it keeps its default).
    **knobs: fixed keyword arguments (``beta=0.1``...); they win over the quantities.

  Every other parameter of ``loss_fn`` present in the quantities under its own name is bound
  (``weights`` included), except ``denominator``: it is bound by what the loss counts
  (``denominator_quantity``: ``pair_denominator`` for a pair loss, ``<mask>_denominator``
  for a token loss on the mask quantity ``<mask>``), so a loss never gets a count of another
  unit. Missing, the loss divides by its local count, which is exact on a whole batch; when
  the quantities hold other global counts (``*_denominator``: they come from a split batch)
  a missing one is an error instead of a micro-batch's count.
  """
  rename = dict(rename or {})
  parameters = list(inspect.signature(loss_fn).parameters)
  unknown = set(rename) - set(parameters)
  if unknown:
    raise TypeError(f"rename names arguments {sorted(unknown)} that {loss_fn} does not take")
  derived = None
  if "denominator" in parameters and "denominator" not in rename and "denominator" not in knobs:
    derived = denominator_quantity(loss_fn, rename)
    rename["denominator"] = None  # bound below, from ``derived``

  def loss_term(quantities: Quantities):
    kwargs = {}
    for name in parameters:
      key = rename.get(name, name)
      if name in knobs or key is None:
        continue
      if key in quantities:
        kwargs[name] = quantities[key]
      elif name in rename:
        raise KeyError(f"quantity {key!r} (for argument {name!r}) is missing")
    if derived is not None:
      if derived in quantities:
        kwargs["denominator"] = quantities[derived]
      elif any(key.endswith("_denominator") for key in quantities):
        raise KeyError(f"quantity {derived!r} (the global count for the denominator of "
                       f"{getattr(loss_fn, '__name__', loss_fn)}) is missing; pass "
                       f"rename={{'denominator': <quantity>}} (None: the local count)")
    return loss_fn(**kwargs, **knobs)

  return loss_term


def weighted_sum(terms: Mapping[str, LossTerm | tuple[Any, LossTerm]]) -> LossTerm:
  """``sum_i w_i L_i`` as a loss term; metrics ``name/metric`` per term, ``name/loss``, ``loss``.

  ``terms`` maps a name to a term (weight 1) or to ``(weight, term)``; weights may be arrays
  (a schedule). Sums nest: a ``weighted_sum`` is a term, its metrics get a further prefix.
  """
  weighted = {name: value if isinstance(value, tuple) else (1.0, value)
              for name, value in terms.items()}

  def loss_term(quantities: Quantities):
    total, metrics = 0.0, {}
    for name, (weight, loss_fn) in weighted.items():
      loss, term_metrics = loss_fn(quantities)
      total = total + weight * loss
      metrics[f"{name}/loss"] = jax.lax.stop_gradient(loss)
      metrics.update({f"{name}/{key}": value for key, value in term_metrics.items()})
    metrics["loss"] = jax.lax.stop_gradient(total)
    return total, metrics

  children = [statistics_of(loss_fn) for _, loss_fn in weighted.values()]
  children = [statistics for statistics in children if statistics is not None]
  if children:
    loss_term.statistics = lambda q: {k: v for child in children for k, v in child(q).items()}
  return loss_term


def with_statistics(loss_term: LossTerm, statistics: Statistics) -> LossTerm:
  """``loss_term`` reading statistics of the whole batch from its quantities.

  ``statistics(quantities) -> {name: scalar}`` must add over micro-batches: each value a sum
  over rows divided by a global denominator, ``sum_i w_i x_i / W`` (a weighted mean; apply a
  clamp or a square in the term, after the sum). ``accumulate_gradients`` sums them over the
  micro-batches before the gradient pass and the objective hands them in as quantities of the
  same names; one that is missing is computed from the quantities given, which is exact when
  those are the whole batch (one micro-batch, an eval step). They never carry a gradient: a
  micro-batch cannot see the others' rows.
  """
  def loss_term_with_statistics(quantities: Quantities):
    own = jax.lax.stop_gradient(statistics(quantities))
    return loss_term({**own, **quantities})

  loss_term_with_statistics.statistics = statistics
  return loss_term_with_statistics


def statistics_of(loss_term: LossTerm) -> Statistics | None:
  """The statistics a term (or a ``weighted_sum`` of terms) declares, or ``None``."""
  return getattr(loss_term, "statistics", None)

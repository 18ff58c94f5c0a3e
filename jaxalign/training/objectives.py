"""Objectives: what one step optimises, as pure functions of (params, batch).

An objective has ``denominators(batch)`` (global counts, computed once over the whole batch
before it is split into micro-batches) and ``loss(params, ref_params, batch, denominators)``
returning ``(loss, metrics)``; summing the losses and metrics of micro-batches gives those of
the whole batch, because every mean (every metric too) divides by the global count. The
objectives here also have ``counts(batch)``: the same counts before ``at_least_one`` clamps
them, which add up over batches (held-out eval sums them over the whole set).

An objective may also have ``statistics(params, ref_params, batch, denominators) -> dict``:
scalars that depend on the params over the whole batch (KTO's reference point), each a sum over
rows divided by a global count. With micro-batches, ``accumulate_gradients`` sums them over
all micro-batches in a forward-only pass first and adds them to the ``denominators`` that every
micro-batch's ``loss`` gets; with one, it does not call it and ``loss``, seeing the whole
batch, computes them itself (``losses.with_statistics`` does both for a loss term).

Batches are dicts of arrays (``as_arrays`` turns the data module's dataclasses into one):
- SFT: ``tokens, attention_mask, loss_mask`` [B, T], or packed (``data.packing``:
  ``tokens, attention_mask, positions, segment_ids`` [B', W], ``response_*`` [B', R]).
- pairs (RM, DPO family): ``chosen_tokens, chosen_attention_mask, chosen_loss_mask`` and the
  same for ``rejected_*`` [B, T], or the shared-prompt layout of the same pairs
  (``data.pair_layout``: ``pair_*`` [B, L], ``response_*`` [B, R]); optional ``weights``
  [B]; optional cached reference log-probs ``ref_chosen_logps, ref_rejected_logps`` [B];
  the RM reads ``margin`` [B] or, with ``margin_scale``, ``scores`` [B]; packed RM pairs
  (``data.packing``, ``data/pair_packing.py``) hold the shared-prompt row arrays [B', W] and
  their per-pair arrays as [B', P] (``pair_arrays`` flattens them).
- unpaired KTO (``training.kto_unpaired``): ``tokens, attention_mask, loss_mask`` [B, T],
  ``desirable`` [B] bool, ``weights`` [B]; optional cached ``ref_logps`` [B].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxalign.losses import LossTerm, bradley_terry_loss, sft_loss, statistics_of
from jaxalign.models import TransformerConfig
from jaxalign.ops import masked_count, sequence_logprobs
from jaxalign.data.pair_layout import is_shared
from jaxalign.data.pair_packing import ROW_KEYS as PACKED_ROW_KEYS, is_packed_pairs
from jaxalign.training.forward import (concat_pairs, pair_response_logprobs,
                                       pair_reward_scores, packed_response_logprobs,
                                       reward_scores, token_logprobs)

Batch = dict[str, jax.Array]


def as_arrays(batch: Any) -> Batch:
  """A dict of the batch's array fields (dataclass, flax struct or mapping)."""
  if isinstance(batch, dict):
    items = batch.items()
  elif dataclasses.is_dataclass(batch):
    items = ((f.name, getattr(batch, f.name)) for f in dataclasses.fields(batch))
  else:
    raise TypeError(f"cannot read a batch of type {type(batch).__name__}")
  return {k: v for k, v in items if v is not None and hasattr(v, "shape")}


_PREFERENCE_COUNTS = ("pairs", "chosen_tokens")  # PreferenceObjective.denominators


def pair_arrays(batch: Batch) -> Batch:
  """The batch with its per-pair arrays flat ``[N]``: as is, except a packed pair batch
  (``data/pair_packing.py``), whose ``[B', P]`` arrays are flattened and whose ``weights``
  are 0 where no pair sits (1 elsewhere when the batch has none)."""
  if not is_packed_pairs(batch):
    return batch
  present = batch["pair_present"].astype(jnp.float32)
  flat = {k: v.reshape(-1) for k, v in batch.items() if k not in PACKED_ROW_KEYS}
  weights = present * batch["weights"] if "weights" in batch else present
  return {**batch, **flat, "weights": weights.reshape(-1)}


def _pair_count(batch: Batch) -> jax.Array:
  """The (weighted) number of pairs, not clamped (``counts``)."""
  weights = pair_arrays(batch).get("weights")
  if weights is None:
    rows = batch["pair_tokens" if is_shared(batch) else "chosen_tokens"]
    return jnp.float32(rows.shape[0])
  return jnp.sum(weights.astype(jnp.float32))


def pair_loss_masks(batch: Batch) -> tuple[jax.Array, jax.Array]:
  """(chosen, rejected) response masks: [B, T] rows, or [B, R] shared-prompt entries."""
  if is_shared(batch):
    side = batch["response_side"]
    return (side == 1).astype(jnp.int32), (side == 2).astype(jnp.int32)
  return batch["chosen_loss_mask"], batch["rejected_loss_mask"]


def at_least_one(counts: Batch) -> Batch:
  """Denominators from counts: ``max(count, 1)`` (an empty batch divides by 1)."""
  return {k: jnp.maximum(v, 1.0) for k, v in counts.items()}


@dataclasses.dataclass(frozen=True)
class SFTObjective:
  """Token-level NLL on response tokens (``loss_mask``)."""

  config: TransformerConfig
  chunk_size: int | None = 128
  needs_reference = False

  def counts(self, batch: Batch) -> Batch:
    """What ``denominators`` counts, unclamped: it adds up over batches (exact eval)."""
    return {"tokens": masked_count(_sft_mask(batch))}

  def denominators(self, batch: Batch) -> Batch:
    return at_least_one(self.counts(batch))

  def loss(self, params, ref_params, batch: Batch, denominators: Batch):
    if "response_side" in batch:
      logps = packed_response_logprobs(self.config, params, batch, chunk_size=self.chunk_size)
    else:
      logps = token_logprobs(self.config, params, batch["tokens"], batch["attention_mask"],
                             chunk_size=self.chunk_size)
    return sft_loss(logps, _sft_mask(batch), denominator=denominators["tokens"])


def _sft_mask(batch: Batch) -> jax.Array:
  """The response mask: [B, T] rows, or [B', R] packed entries."""
  if "response_side" in batch:
    return (batch["response_side"] > 0).astype(jnp.int32)
  return batch["loss_mask"]


@dataclasses.dataclass(frozen=True)
class RewardModelObjective:
  """Bradley-Terry on RewardModel scores; chosen and rejected in one forward pass."""

  config: TransformerConfig
  center_rewards_coefficient: float | None = None
  margin_scale: float = 0.0  # margin = scale * batch["scores"] unless the batch has "margin"
  needs_reference = False

  def counts(self, batch: Batch) -> Batch:
    return {"pairs": _pair_count(batch)}

  def denominators(self, batch: Batch) -> Batch:
    return at_least_one(self.counts(batch))

  def pair_scores(self, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(chosen, rejected) scores [B], one forward pass over both."""
    if is_shared(batch):
      chosen, rejected = pair_reward_scores(self.config, params, batch)
      return chosen.reshape(-1), rejected.reshape(-1)  # [B], or [B' P] packed
    B = batch["chosen_tokens"].shape[0]
    scores = reward_scores(self.config, params,
                           concat_pairs(batch["chosen_tokens"], batch["rejected_tokens"]),
                           concat_pairs(batch["chosen_attention_mask"],
                                        batch["rejected_attention_mask"]))
    return scores[:B], scores[B:]

  def loss(self, params, ref_params, batch: Batch, denominators: Batch):
    chosen, rejected = self.pair_scores(params, batch)
    batch = pair_arrays(batch)
    margin = batch.get("margin")
    if margin is None and self.margin_scale and "scores" in batch:
      margin = self.margin_scale * batch["scores"]  # score_chosen - score_rejected, 0 if none
    return bradley_terry_loss(chosen, rejected, margin,
                              center_rewards_coefficient=self.center_rewards_coefficient,
                              weights=batch.get("weights"), denominator=denominators["pairs"])


@dataclasses.dataclass(frozen=True)
class PreferenceObjective:
  """Any loss of the DPO family (or a weighted sum) on one concatenated chosen+rejected pass.

  ``loss_term`` reads these quantities by name (see ``jaxalign.losses.term``):
  ``chosen_logps, rejected_logps`` (summed, or length-normalised when ``average_logps``),
  ``ref_chosen_logps, ref_rejected_logps`` (same normalisation), ``chosen_lengths,
  rejected_lengths``, ``chosen_token_logps, chosen_loss_mask``, ``nll_loss`` (token-level NLL
  of the chosen responses over the global batch), ``weights``, and global counts named by unit
  (``term`` binds a loss's ``denominator`` to the one it counts): ``pair_denominator``
  (weighted pairs) and ``chosen_loss_mask_denominator`` (chosen response tokens).
  """

  config: TransformerConfig
  loss_term: LossTerm
  average_logps: bool = False
  needs_reference: bool = True
  chunk_size: int | None = 128

  def counts(self, batch: Batch) -> Batch:
    return {"pairs": _pair_count(batch),
            "chosen_tokens": masked_count(pair_loss_masks(batch)[0])}

  def denominators(self, batch: Batch) -> Batch:
    return at_least_one(self.counts(batch))

  def sequence_logps(self, params, batch: Batch):
    """(chosen, rejected) sequence log-probs and the chosen per-token ones with their mask,
    one forward pass (either layout)."""
    if is_shared(batch):
      token_logps = pair_response_logprobs(self.config, params, batch,
                                           chunk_size=self.chunk_size)  # [B, R]
      chosen_mask, rejected_mask = pair_loss_masks(batch)
      return (sequence_logprobs(token_logps, chosen_mask, average=self.average_logps),
              sequence_logprobs(token_logps, rejected_mask, average=self.average_logps),
              token_logps, chosen_mask)
    B = batch["chosen_tokens"].shape[0]
    tokens = concat_pairs(batch["chosen_tokens"], batch["rejected_tokens"])
    mask = concat_pairs(batch["chosen_loss_mask"], batch["rejected_loss_mask"])
    attention = concat_pairs(batch["chosen_attention_mask"], batch["rejected_attention_mask"])
    token_logps = token_logprobs(self.config, params, tokens, attention,
                                 chunk_size=self.chunk_size)  # [2B, T]
    seq = sequence_logprobs(token_logps, mask, average=self.average_logps)  # [2B]
    return seq[:B], seq[B:], token_logps[:B], mask[:B]

  def reference_logps(self, ref_params, batch: Batch):
    if "ref_chosen_logps" in batch:
      return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    if ref_params is None:
      return None, None
    chosen, rejected, _, _ = self.sequence_logps(ref_params, batch)
    return jax.lax.stop_gradient(chosen), jax.lax.stop_gradient(rejected)

  def quantities(self, params, ref_params, batch: Batch, denominators: Batch) -> Batch:
    """The named arrays ``loss_term`` reads (class docstring), one forward pass of each model.

    Entries of ``denominators`` beyond this objective's own counts are statistics of the
    whole batch (``statistics``) and become quantities of the same names.
    """
    chosen, rejected, chosen_token_logps, chosen_mask = self.sequence_logps(params, batch)
    ref_chosen, ref_rejected = self.reference_logps(ref_params, batch)
    if self.needs_reference and ref_chosen is None:
      raise ValueError("this loss needs reference log-probs: give the state ref_params or "
                       "the batch ref_chosen_logps / ref_rejected_logps")
    nll = -jnp.sum(chosen_token_logps * chosen_mask) / denominators["chosen_tokens"]
    chosen_loss_mask, rejected_loss_mask = pair_loss_masks(batch)
    quantities = {
        "chosen_logps": chosen, "rejected_logps": rejected,
        "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected,
        "chosen_lengths": masked_count(chosen_loss_mask, axis=1),
        "rejected_lengths": masked_count(rejected_loss_mask, axis=1),
        "chosen_token_logps": chosen_token_logps, "chosen_loss_mask": chosen_mask,
        "nll_loss": nll, "pair_denominator": denominators["pairs"],
        "chosen_loss_mask_denominator": denominators["chosen_tokens"],
        "weights": batch.get("weights"),
    }
    quantities.update({k: v for k, v in denominators.items() if k not in _PREFERENCE_COUNTS})
    return {k: v for k, v in quantities.items() if v is not None}

  def statistics(self, params, ref_params, batch: Batch, denominators: Batch) -> Batch:
    """This batch's share of the statistics ``loss_term`` declares (``with_statistics``, e.g.
    KTO's mean log-ratio); ``{}``, without a forward pass, when it declares none."""
    statistics = statistics_of(self.loss_term)
    if statistics is None:
      return {}
    quantities = self.quantities(params, ref_params, batch, denominators)
    return jax.lax.stop_gradient(statistics(quantities))

  def loss(self, params, ref_params, batch: Batch, denominators: Batch):
    return self.loss_term(self.quantities(params, ref_params, batch, denominators))


@functools.lru_cache(maxsize=16)
def reference_logps_fn(objective: PreferenceObjective) -> Callable:
  """A jitted ``(ref_params, batch) -> (ref_chosen_logps, ref_rejected_logps)`` for caching
  the reference once over a dataset (offline DPO then needs no reference pass per step).
  One compiled function per objective, reused by every refresh of an online run."""
  @jax.jit
  def compute(ref_params, batch):
    chosen, rejected, _, _ = objective.sequence_logps(ref_params, batch)
    return chosen, rejected
  return compute

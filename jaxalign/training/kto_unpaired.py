"""KTO on unpaired examples: one completion per row, labelled desirable or not.

TRL's unpaired form ``{"prompt", "completion", "label": true|false}`` becomes
``UnpairedRows`` / ``UnpairedBatch`` (``tokens, attention_mask, loss_mask`` [B, T],
``desirable`` [B] bool, ``weights`` [B]). Each row is one example; the loss is
``losses.kto_loss`` (Ethayarajh et al. 2024):

  desirable:    lambda_D (1 - sigmoid(beta (r - z_0)))
  undesirable:  lambda_U (1 - sigmoid(beta (z_0 - r))),    r = log pi(y|x) - log pi_ref(y|x)

with ``z_0 = max(0, sum_i w_i r_i / sum_i w_i)``, the detached weighted mean log-ratio over the
global batch's examples: the same stand-in for TRL's mismatched-pair KL estimate as the
pair-KTO term (``preference_losses._kto_term``), so a preference file split into one desirable
and one undesirable row per pair gives exactly the pair-KTO loss (tested). The loss is a
weighted mean over all examples (``examples`` count); the reward metrics are means over the
desirable and the undesirable examples (their own counts). ``z_0`` is a statistic of the
whole batch (``statistics``), so micro-batches and held-out eval get the batch's, not a slice's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxalign.losses import kto_loss
from jaxalign.models import TransformerConfig
from jaxalign.ops import sequence_logprobs, upcast
from jaxalign.training.forward import token_logprobs
from jaxalign.training.objectives import at_least_one

Batch = dict[str, jax.Array]


def _weights(batch: Batch) -> jax.Array:
  weights = batch.get("weights")
  return (jnp.ones(batch["tokens"].shape[0], jnp.float32) if weights is None
          else upcast(weights))


@dataclasses.dataclass(frozen=True)
class UnpairedKTOObjective:
  """KTO on ``UnpairedBatch`` dicts (module docstring); ``needs_reference`` always."""

  config: TransformerConfig
  beta: float = 0.1
  desirable_weight: float = 1.0
  undesirable_weight: float = 1.0
  chunk_size: int | None = 128
  needs_reference = True

  def counts(self, batch: Batch) -> Batch:
    weights, desirable = _weights(batch), batch["desirable"].astype(jnp.float32)
    return {"examples": jnp.sum(weights), "desirable": jnp.sum(weights * desirable),
            "undesirable": jnp.sum(weights * (1.0 - desirable))}

  def denominators(self, batch: Batch) -> Batch:
    return at_least_one(self.counts(batch))

  def sequence_logps(self, params, batch: Batch) -> jax.Array:
    token_logps = token_logprobs(self.config, params, batch["tokens"], batch["attention_mask"],
                                 chunk_size=self.chunk_size)
    return sequence_logprobs(token_logps, batch["loss_mask"])  # [B]

  def reference_arrays(self, ref_params, batch: Batch) -> Batch:
    """What a cached reference pass stores per row (``training.dataset_pass``)."""
    return {"ref_logps": self.sequence_logps(ref_params, batch)}

  def _logps(self, params, ref_params, batch: Batch):
    logps = self.sequence_logps(params, batch)
    if "ref_logps" in batch:
      return logps, batch["ref_logps"]
    if ref_params is None:
      raise ValueError("KTO needs reference log-probs: give the state ref_params or the batch "
                       "ref_logps")
    return logps, jax.lax.stop_gradient(self.sequence_logps(ref_params, batch))

  def _logratio_mean(self, logps, ref_logps, batch: Batch, denominators: Batch) -> jax.Array:
    logratios = upcast(logps) - upcast(ref_logps)
    return jax.lax.stop_gradient(jnp.sum(_weights(batch) * logratios)
                                 / denominators["examples"])

  def statistics(self, params, ref_params, batch: Batch, denominators: Batch) -> Batch:
    """This batch's share of the mean log-ratio (summed over micro-batches / eval batches)."""
    logps, ref_logps = self._logps(params, ref_params, batch)
    return {"kto_logratio_mean": self._logratio_mean(logps, ref_logps, batch, denominators)}

  def loss(self, params, ref_params, batch: Batch, denominators: Batch):
    logps, ref_logps = self._logps(params, ref_params, batch)
    mean = denominators.get("kto_logratio_mean")
    if mean is None:  # one batch: its own statistic
      mean = self._logratio_mean(logps, ref_logps, batch, denominators)
    return kto_loss(logps, ref_logps, batch["desirable"], jnp.maximum(mean, 0.0),
                    beta=self.beta, desirable_weight=self.desirable_weight,
                    undesirable_weight=self.undesirable_weight, weights=_weights(batch),
                    denominator=denominators["examples"],
                    desirable_denominator=denominators["desirable"],
                    undesirable_denominator=denominators["undesirable"])

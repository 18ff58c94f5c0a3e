"""Supervised fine-tuning: token-level negative log-likelihood."""

from __future__ import annotations

import jax

from jaxalign.losses._common import Metrics, denominator_counts, finish_metrics
from jaxalign.ops import masked_count, masked_mean


@denominator_counts("loss_mask")
def sft_loss(token_logps: jax.Array, loss_mask: jax.Array,
             denominator=None) -> tuple[jax.Array, Metrics]:
  """Mean negative log-likelihood over the response tokens.

  ``L = -sum_{b,t} m_{bt} log pi(y_{bt} | y_{b,<t}) / max(sum m, 1)``: every token counts the
  same (a token-level mean, as TRL's SFTTrainer and HF's causal-LM loss), not a mean of
  per-sequence means.

  Args:
    token_logps: ``[B, T]`` shifted token log-probs (``ops.shifted_token_logprobs``).
    loss_mask: ``[B, T]`` 1 on response tokens.
    denominator: global number of response tokens when the batch is split.

  Returns:
    ``(loss, metrics)`` with ``nll`` and ``num_tokens`` (local count). No perplexity: exp of a
    large NLL overflows float32; take ``exp(nll)`` of the logged value instead.
  """
  nll = -masked_mean(token_logps, loss_mask, denominator)
  metrics = {"nll": nll, "num_tokens": masked_count(loss_mask)}
  return nll, finish_metrics(metrics)

"""Rollouts for online training: sample responses with the compiled sampler on the current
params, then score them (reward model, gold reward) and recompute what the losses need.

Layout: ``sequence [B, P + N]`` = left-padded prompt then right-padded response. Every
per-token array below is ``[B, N]`` over the response columns; entry t belongs to the
decision that produced response token t (made at sequence position P + t - 1).
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from jaxalign.models import ScalarHead, Transformer, TransformerConfig, ValueModel
from jaxalign.models.lora import model_variables
from jaxalign.models.transformer import lm_head
from jaxalign.ops import entropy_from_logits, token_logprobs
from jaxalign.sampling import generate, truncated_logprobs
from jaxalign.training.forward import lm_head_weight


@flax.struct.dataclass
class Rollout:
  prompt_tokens: jax.Array     # [B, P] left-padded
  prompt_mask: jax.Array       # [B, P]
  sequence: jax.Array          # [B, P + N]
  sequence_mask: jax.Array     # [B, P + N]
  response_mask: jax.Array     # [B, N]
  sampler_logps: jax.Array     # [B, N] the sampler's, at the sampling temperature
  policy_logps: jax.Array      # [B, N] the sampler's, at temperature 1
  # The trainers recompute the log-probs they use with a training-layout forward pass
  # (``response_logps``, ``policy_value_outputs``); these two measure the gap.
  has_eos: jax.Array           # [B]
  kept_counts: jax.Array | None = None  # [B, N] the sampler's support size (top-k / top-p)


def _response_hidden(config: TransformerConfig, params, sequence, sequence_mask, P: int):
  """Final hidden states ``[B, N, D]`` at the positions that score the response tokens."""
  hidden = Transformer(config, output="hidden").apply(
      model_variables(params), sequence, attention_mask=sequence_mask)  # [B, P + N, D]
  return hidden[:, P - 1:-1]


def response_logits(config: TransformerConfig, params, sequence, sequence_mask, P: int,
                    return_hidden: bool = False):
  """Logits ``[B, N, V]`` that scored each response token (and the hidden states there).
  The LM head runs on the N response positions only, never on the prompt's."""
  hidden = _response_hidden(config, params, sequence, sequence_mask, P)
  logits = lm_head(config, hidden, lm_head_weight(config, params))
  return (logits, hidden) if return_hidden else logits


def response_logps(config, params, sequence, sequence_mask, P: int, temperature: float = 1.0):
  """Log-probs ``[B, N]`` of the response tokens under ``params`` (the head on the response
  positions only). The same computation as the trainers' ``policy_logps(response_logits(...))``
  so that a policy equal to its reference has a KL of exactly 0 and a first ratio of 1."""
  logits = response_logits(config, params, sequence, sequence_mask, P)
  return token_logprobs(logits, sequence[:, P:], temperature)


def policy_logps(logits, targets, temperature: float, kept_counts=None):
  """``[B, N]`` log-probs of the sampled ``targets`` under the distribution the sampler drew
  from: softmax(logits / T), restricted to the sampler's support when ``kept_counts`` (from
  a top-k / top-p rollout) is given, so the ratio's old and new log-probs and the sampler's
  agree on one support."""
  if kept_counts is None:
    return token_logprobs(logits, targets, temperature)
  return truncated_logprobs(logits, targets, kept_counts, temperature)


def policy_value_outputs(config, params, sequence, sequence_mask, P: int, temperature: float,
                         kept_counts=None):
  """(log-probs at ``temperature`` on the sampler's support, entropies, values), ``[B, N]``.

  ``params = {"policy": ..., "value": ...}``; the value is a head on the policy's backbone
  when ``params["value"]`` holds only ``{"head": ...}``, else a separate ``ValueModel``.
  The entropy is that of the whole tempered distribution.
  """
  shared = set(params["value"]) == {"head"}
  logits, hidden = response_logits(config, params["policy"], sequence, sequence_mask, P,
                                   return_hidden=True)
  logps = policy_logps(logits, sequence[:, P:], temperature, kept_counts)
  entropies = entropy_from_logits(logits, temperature)
  if shared:
    values = ScalarHead(zero_init=True).apply({"params": params["value"]["head"]}, hidden)
  else:
    values = ValueModel(config).apply({"params": params["value"]}, sequence,
                                      sequence_mask)[:, P - 1:-1]
  return logps, entropies, values


@functools.partial(jax.jit, static_argnames=("eos_id",))
def _has_eos(tokens, response_mask, eos_id: int) -> jax.Array:
  return jnp.any((tokens == eos_id) & (response_mask > 0), axis=1)  # [B]


def sample_rollout(config: TransformerConfig, policy_params, prompt_tokens, prompt_mask, rng, *,
                   max_new_tokens: int, temperature: float, eos_id: int, pad_id: int = 0,
                   top_k: int = 0, top_p: float = 1.0, num_samples: int = 1) -> Rollout:
  """Samples ``num_samples`` responses per prompt with the compiled sampler (one prefill per
  prompt; rows prompt-major). With top-k / top-p the rollout keeps the sampler's support
  (``kept_counts``) and ``sampler_logps`` are the log-probs of the truncated distribution."""
  out = generate(config, policy_params, prompt_tokens, prompt_mask, rng,
                 max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id,
                 pad_id=pad_id, return_sequence=True, top_k=top_k, top_p=top_p,
                 num_samples=num_samples)
  truncated = top_k > 0 or top_p < 1.0
  has_eos = _has_eos(out.tokens, out.response_mask, eos_id)
  P = out.sequence.shape[1] - out.tokens.shape[1]
  return Rollout(prompt_tokens=out.sequence[:, :P], prompt_mask=out.sequence_mask[:, :P],
                 sequence=out.sequence, sequence_mask=out.sequence_mask,
                 response_mask=out.response_mask,
                 sampler_logps=out.sampling_logprobs if truncated else out.tempered_logprobs,
                 policy_logps=out.logprobs, has_eos=has_eos,
                 kept_counts=out.kept_counts if truncated else None)

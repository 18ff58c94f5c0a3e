"""Model passes the trainers need: per-token log-probs (with the LM head applied in chunks,
never materialising [B, T, V] logits for the backward pass) and reward-model scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.models import RewardModel, Transformer, TransformerConfig
from jaxalign.models.heads import ScalarHead
from jaxalign.models.lora import base_params, model_variables
from jaxalign.models.transformer import softcap as soft_cap


def lm_head_weight(config: TransformerConfig, params) -> jax.Array:
  """The [V, D] output projection (the embedding when tied)."""
  params = base_params(params)
  return params["embed"] if config.tie_embeddings else params["lm_head"]


def _chunk_logps(hidden, weight, targets, temperature, softcap=None):
  """log softmax(cap(hidden @ weight^T) / T)[targets] for one chunk.  # [B, C]"""
  logits = jnp.einsum("BCD,VD->BCV", hidden, weight.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  logits = soft_cap(logits, softcap) / temperature
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return target_logits - jax.nn.logsumexp(logits, axis=-1)


def hidden_token_logprobs(hidden, weight, targets, temperature: float = 1.0,
                          chunk_size: int | None = 128,
                          softcap: float | None = None) -> jax.Array:
  """Log-probs of ``targets [B, T]`` from ``hidden [B, T, D]`` at the same positions;
  ``softcap`` is the model's ``final_logit_softcap`` (Gemma 2), applied before temperature.

  The LM head runs chunk by chunk along T under ``jax.checkpoint``: the backward pass
  recomputes one chunk's logits at a time, so memory is O(B * chunk * V), not O(B * T * V).
  """
  B, T, _ = hidden.shape
  if not chunk_size or chunk_size >= T:
    return _chunk_logps(hidden, weight, targets, temperature, softcap)
  pad = -T % chunk_size
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  n = (T + pad) // chunk_size
  hidden_c = hidden.reshape(B, n, chunk_size, -1).swapaxes(0, 1)  # [n, B, C, D]
  targets_c = targets.reshape(B, n, chunk_size).swapaxes(0, 1)    # [n, B, C]
  chunk_fn = jax.checkpoint(lambda h, t: _chunk_logps(h, weight, t, temperature, softcap))
  out = jax.lax.map(lambda args: chunk_fn(*args), (hidden_c, targets_c))  # [n, B, C]
  return out.swapaxes(0, 1).reshape(B, T + pad)[:, :T]


def token_logprobs(config: TransformerConfig, params, tokens, attention_mask,
                   temperature: float = 1.0, chunk_size: int | None = 128) -> jax.Array:
  """Shifted per-token log-probs ``[B, T]``: column t scores ``tokens[:, t]`` from position
  t - 1; column 0 is 0. Float32 whatever the params' dtype."""
  hidden = Transformer(config, output="hidden").apply(
      model_variables(params), tokens, attention_mask=attention_mask)  # [B, T, D]
  logps = hidden_token_logprobs(hidden[:, :-1], lm_head_weight(config, params), tokens[:, 1:],
                                temperature, chunk_size, config.final_logit_softcap)
  return jnp.pad(logps, ((0, 0), (1, 0)))


def pair_hidden(config: TransformerConfig, params, batch) -> jax.Array:
  """Final hidden states [B, L, D] of a shared-prompt pair batch (``data.pair_layout``)."""
  return Transformer(config, output="hidden").apply(
      model_variables(params), batch["pair_tokens"],
      attention_mask=batch["pair_attention_mask"],
      positions=batch["pair_positions"], segment_ids=batch["pair_segment_ids"],
      prefix_ids=batch["pair_prefix_ids"])


def gathered_logprobs(hidden, weight, source, targets, temperature: float = 1.0,
                      chunk_size: int | None = 128, softcap: float | None = None) -> jax.Array:
  """Log-probs [B, R] of ``targets`` predicted from the hidden states at slots ``source``
  [B, R]: the LM head runs on R gathered positions only; ``source < 0`` scores 0."""
  picked = jnp.take_along_axis(hidden, jnp.maximum(source, 0)[..., None], axis=1)  # [B, R, D]
  logps = hidden_token_logprobs(picked, weight, targets, temperature, chunk_size, softcap)
  return jnp.where(source >= 0, logps, 0.0)


def pair_response_logprobs(config: TransformerConfig, params, batch, temperature: float = 1.0,
                           chunk_size: int | None = 128) -> jax.Array:
  """Log-probs [B, R] of a shared-prompt batch's response entries (``response_side`` says
  chosen 1 / rejected 2 / unused 0)."""
  return gathered_logprobs(pair_hidden(config, params, batch), lm_head_weight(config, params),
                           batch["response_source"], batch["response_targets"], temperature,
                           chunk_size, config.final_logit_softcap)


def packed_response_logprobs(config: TransformerConfig, params, batch,
                             temperature: float = 1.0, chunk_size: int | None = 128):
  """Log-probs [B', R] of a packed SFT batch's response entries (``data.packing``)."""
  hidden = Transformer(config, output="hidden").apply(
      model_variables(params), batch["tokens"], attention_mask=batch["attention_mask"],
      positions=batch["positions"], segment_ids=batch["segment_ids"])  # [B', W, D]
  return gathered_logprobs(hidden, lm_head_weight(config, params), batch["response_source"],
                           batch["response_targets"], temperature, chunk_size,
                           config.final_logit_softcap)


def pair_reward_scores(config: TransformerConfig, params, batch) -> tuple[jax.Array, jax.Array]:
  """Reward-model (chosen, rejected) scores of a shared-prompt pair batch, [B] (or [B', P]
  packed, ``data/pair_packing.py``): the score head at each sequence's last token
  (``RewardModel``'s params)."""
  hidden = pair_hidden(config, params["backbone"], batch)  # [B, L, D]
  ends = jnp.stack([batch["chosen_last"], batch["rejected_last"]], axis=-1)  # [B, (P,) 2]
  flat = ends.reshape(ends.shape[0], -1)  # [B, 2] or [B', 2P]
  last = jnp.take_along_axis(hidden, flat[..., None], axis=1)  # [B, 2(P), D]
  scores = ScalarHead().apply({"params": params["score"]}, last).reshape(ends.shape)
  return scores[..., 0], scores[..., 1]


def reward_scores(config: TransformerConfig, params, tokens, attention_mask) -> jax.Array:
  """Reward-model scores ``[B]`` at each row's last real token."""
  return RewardModel(config).apply(model_variables(params), tokens, attention_mask)


def pad_to_length(x: jax.Array, length: int) -> jax.Array:
  """Right-pads the time axis (axis 1) with zeros up to ``length``."""
  return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def concat_pairs(chosen, rejected) -> jax.Array:
  """Stacks chosen rows over rejected rows ([2B, T]), padding both to one length."""
  length = max(chosen.shape[1], rejected.shape[1])
  return jnp.concatenate([pad_to_length(chosen, length), pad_to_length(rejected, length)])

"""Scalar heads on the transformer backbone: reward models and value functions.

- ``RewardModel``: one score per sequence, read at the last real token. Params
  ``{"backbone": <transformer params without lm_head>, "score": {"kernel", "bias"}}``.
- ``ValueModel``: one value per token (a separate critic). Same param layout.
- ``PolicyValueModel``: a policy and a value head sharing one backbone. Params
  ``{"policy": <the policy's own params>, "value_head": {...}}``, so a plain policy's params
  drop in unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxalign.models.config import TransformerConfig
from jaxalign.models.transformer import Transformer


def last_token_index(attention_mask: jax.Array) -> jax.Array:
  """Index of the last real token of each row, for left- or right-padded rows.  # [B]"""
  T = attention_mask.shape[1]
  reversed_first = jnp.argmax(attention_mask[:, ::-1] > 0, axis=1)
  return (T - 1 - reversed_first).astype(jnp.int32)


class ScalarHead(nn.Module):
  """Dense(D -> 1) in float32; zero-initialised when ``zero_init`` (PPO value heads)."""

  zero_init: bool = False

  @nn.compact
  def __call__(self, hidden):
    init = nn.initializers.zeros if self.zero_init else nn.initializers.normal(
        1.0 / (hidden.shape[-1] + 1) ** 0.5)
    out = nn.Dense(1, kernel_init=init, dtype=jnp.float32, param_dtype=jnp.float32,
                   name="dense")(hidden.astype(jnp.float32))
    return out[..., 0]


class RewardModel(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens, attention_mask=None):
    """Returns scores [B] (float32) at each row's last real token."""
    if attention_mask is None:
      attention_mask = jnp.ones(tokens.shape, jnp.int32)
    hidden = Transformer(self.config, output="hidden", name="backbone")(
        tokens, attention_mask)  # [B, T, D]
    last = last_token_index(attention_mask)
    hidden_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, D]
    return ScalarHead(name="score")(hidden_last)


class ValueModel(nn.Module):
  config: TransformerConfig
  zero_init: bool = True

  @nn.compact
  def __call__(self, tokens, attention_mask=None):
    """Returns values [B, T] (float32), one per token."""
    hidden = Transformer(self.config, output="hidden", name="backbone")(
        tokens, attention_mask)
    return ScalarHead(self.zero_init, name="score")(hidden)


class PolicyValueModel(nn.Module):
  config: TransformerConfig
  zero_init: bool = True

  @nn.compact
  def __call__(self, tokens, attention_mask=None):
    """Returns (logits [B, T, V], values [B, T]) from one shared backbone pass."""
    logits, hidden = Transformer(self.config, name="policy")(
        tokens, attention_mask, return_hidden=True)
    return logits, ScalarHead(self.zero_init, name="value_head")(hidden)

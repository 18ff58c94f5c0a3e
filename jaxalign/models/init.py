"""Random initialisation and parameter counting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models.config import TransformerConfig
from jaxalign.models.transformer import Transformer


def init_params(config: TransformerConfig, rng: jax.Array) -> dict:
  """Random params for ``Transformer(config)`` (normal(0.02) kernels, zero biases)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.jit(lambda key: Transformer(config).init(key, tokens)["params"])(rng)


def count_params(params) -> int:
  """Total number of scalars in a param tree (tied tensors live once, so count once)."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))

"""Random initialisation and parameter counting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models.config import TransformerConfig
from jaxalign.models.layer_stack import stack_layers
from jaxalign.models.transformer import Transformer


def init_params(config: TransformerConfig, rng: jax.Array) -> dict:
  """Random params for ``Transformer(config)`` (normal(0.02) kernels, zero biases). The same
  ``rng`` gives the same weights in either layer layout: under ``scan_layers`` the unrolled
  init is stacked, so a seed means one model whichever layout trains it."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  unrolled = config.replace(scan_layers=False)
  params = jax.jit(lambda key: Transformer(unrolled).init(key, tokens)["params"])(rng)
  return stack_layers(params, config.num_layers) if config.scan_layers else params


def count_params(params) -> int:
  """Total number of scalars in a param tree (tied tensors live once, so count once)."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))

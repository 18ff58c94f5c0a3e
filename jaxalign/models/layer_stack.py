"""The two layouts of a transformer's decoder params, and the conversions between them.

Unrolled (``scan_layers=False``): one subtree per block, ``layers_0`` .. ``layers_{L-1}``,
e.g. ``params["layers_3"]["attn"]["q_proj"]["kernel"]`` [D, N*H]. Stacked
(``scan_layers=True``, the blocks run under ``nn.scan``): one subtree ``layers`` whose leaves
carry a leading layer axis, ``params["layers"]["attn"]["q_proj"]["kernel"]`` [L, D, N*H];
layer i is ``leaf[i]``. Everything outside the blocks (embeddings, final norm, LM head,
scalar heads) is the same in both.

The conversions find the layer subtrees at any depth, so a reward model's ``backbone/`` or
a policy-with-value-head's ``policy/`` converts too. Host (numpy) leaves stay numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

STACKED = "layers"


def _layer_name(i: int) -> str:
  return f"layers_{i}"


def _stack(leaves):
  if all(isinstance(x, np.ndarray) for x in leaves):
    return np.stack(leaves)
  return jnp.stack(leaves)


def _convert_nodes(params, convert: Callable[[dict], dict | None]):
  """``params`` with every dict node that ``convert`` rewrites (it returns None to leave a
  node alone and descend into it) replaced."""
  if not isinstance(params, Mapping):
    return params
  node = dict(params)
  converted = convert(node)
  if converted is not None:
    return converted
  return {key: _convert_nodes(value, convert) for key, value in node.items()}


def stack_layers(params, num_layers: int):
  """``layers_0`` .. ``layers_{L-1}`` -> one ``layers`` subtree with leaves [L, ...].

  A tree already stacked (or without layers) comes back unchanged; a node holding only some
  of the ``num_layers`` layers raises ValueError."""

  def convert(node):
    if _layer_name(0) not in node:
      return None
    missing = [_layer_name(i) for i in range(num_layers) if _layer_name(i) not in node]
    extra = _layer_name(num_layers) in node
    if missing or extra:
      raise ValueError(f"cannot stack {num_layers} layers: missing {missing[:4]}"
                       + (f", and {_layer_name(num_layers)} is beyond num_layers" if extra
                          else ""))
    layers = [node.pop(_layer_name(i)) for i in range(num_layers)]
    node[STACKED] = jax.tree_util.tree_map(lambda *xs: _stack(xs), *layers)
    return node
  return _convert_nodes(params, convert)


def unstack_layers(params, num_layers: int):
  """One ``layers`` subtree with leaves [L, ...] -> ``layers_0`` .. ``layers_{L-1}``.

  A tree already unrolled comes back unchanged; a leading axis other than ``num_layers``
  raises ValueError."""

  def convert(node):
    if STACKED not in node:
      return None
    stacked = node.pop(STACKED)
    for leaf in jax.tree_util.tree_leaves(stacked):
      if not leaf.shape or leaf.shape[0] != num_layers:
        raise ValueError(f"cannot unstack {num_layers} layers: a stacked leaf has shape "
                         f"{tuple(leaf.shape)}")
    for i in range(num_layers):
      node[_layer_name(i)] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    return node
  return _convert_nodes(params, convert)


def has_stacked_layers(params) -> bool:
  """Whether ``params`` (at any depth) hold the stacked ``layers`` subtree."""
  if not isinstance(params, Mapping):
    return False
  return STACKED in params or any(has_stacked_layers(v) for v in params.values())


def to_layout(params, num_layers: int, scan_layers: bool):
  """``params`` in the layout ``scan_layers`` asks for (stacked or unrolled), whichever they
  are in now."""
  if scan_layers:
    return stack_layers(params, num_layers)
  return unstack_layers(params, num_layers)

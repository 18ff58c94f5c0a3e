"""The key/value cache: an explicit value passed into the model and returned by it.

Layout is head-major, ``[B, K, S, H]`` per layer, so a decode step appends one slot along S
and the attention matmuls read contiguous ``[S, H]`` panels per (batch, kv-head) without a
transpose. All rows write the same slot (prompts are left-padded), so the write position is
one scalar; which slots hold real tokens is tracked per row in ``mask``.

``keys`` / ``values`` are a tuple of per-layer arrays for the unrolled model, and one
stacked array ``[L, B, K, S, H]`` for ``scan_layers`` (the scan reads and writes it layer
by layer); ``init_cache`` picks the config's layout and ``repeat_rows`` handles both.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jaxalign.models.config import TransformerConfig


@flax.struct.dataclass
class KVCache:
  keys: tuple[jax.Array, ...] | jax.Array    # num_layers x [B, K, S, H], or [L, B, K, S, H]
  values: tuple[jax.Array, ...] | jax.Array  # the same layout as keys
  mask: jax.Array                 # [B, S] int32, 1 where the slot holds a real token
  lengths: jax.Array              # [B] int32, real tokens written so far (next position)
  index: jax.Array                # [] int32, next slot to write

  @property
  def size(self) -> int:
    return self.mask.shape[1]

  @property
  def stacked(self) -> bool:
    """Whether keys / values are one ``[L, B, K, S, H]`` array (``scan_layers``)."""
    return not isinstance(self.keys, tuple)

  def repeat_rows(self, times: int) -> "KVCache":
    """Every row repeated ``times`` (row b -> rows b*G .. b*G+G-1), in either layout."""
    if times == 1:
      return self
    axis = 1 if self.stacked else 0  # the batch axis of a keys / values array
    repeat = lambda x: jnp.repeat(x, times, axis=axis)
    return self.replace(keys=jax.tree_util.tree_map(repeat, self.keys),
                        values=jax.tree_util.tree_map(repeat, self.values),
                        mask=jnp.repeat(self.mask, times, axis=0),
                        lengths=jnp.repeat(self.lengths, times, axis=0))


def init_cache(config: TransformerConfig, batch_size: int, size: int,
               dtype=None) -> KVCache:
  """An empty cache of ``size`` slots for ``batch_size`` rows (dtype defaults to compute), in
the config's layout (stacked ``[L, B, K, S, H]`` under ``scan_layers``)."""
  if size > config.max_seq_len:
    raise ValueError(f"cache size {size} exceeds the model's context "
                     f"max_seq_len={config.max_seq_len}")
  dtype = dtype or config.compute_dtype
  shape = (batch_size, config.num_kv_heads, size, config.head_dim)  # [B, K, S, H]
  if config.scan_layers:
    zeros = lambda: jnp.zeros((config.num_layers,) + shape, dtype)  # [L, B, K, S, H]
  else:
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
  return KVCache(keys=zeros(), values=zeros(),
                 mask=jnp.zeros((batch_size, size), jnp.int32),
                 lengths=jnp.zeros((batch_size,), jnp.int32),
                 index=jnp.zeros((), jnp.int32))

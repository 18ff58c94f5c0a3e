"""The decoder-only transformer (GPT-2, Llama, Qwen and Gemma families) as Flax Linen modules.

``Transformer(config).apply({"params": params}, tokens, attention_mask=..., positions=...,
cache=...)`` returns logits ``[B, T, V]`` in float32, and ``(logits, cache)`` when a cache is
passed. Positions derive from the mask (``cumsum(mask) - 1``), so left- and right-padded
rows give the same logits at real tokens as unpadded ones. With ``config.scan_layers`` the
blocks run under one ``nn.scan`` over stacked params (``models/layer_stack.py``) and a
stacked cache; the logits are the unrolled model's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxalign.models.cache import KVCache
from jaxalign.models.config import TransformerConfig
from jaxalign.models.rope import apply_rope, inverse_frequencies
from jaxalign.parallel.sharding import constrain_embedding, constrain_residual

_NEG_INF = -1e30  # finite: a row with no visible key (a pad query) stays NaN-free
_ACTIVATIONS = {
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}
_init = nn.initializers.normal(stddev=0.02)


class Norm(nn.Module):
  """LayerNorm or RMSNorm over the last axis with statistics in float32.

  ``norm_zero_centred`` (Gemma): the stored scale is zero-centred and applied as
  ``y * (1 + scale)`` in float32 before the cast, as transformers' Gemma RMSNorm does."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    x32 = x.astype(jnp.float32)
    init = nn.initializers.zeros if cfg.norm_zero_centred else nn.initializers.ones
    scale = self.param("scale", init, (x.shape[-1],), cfg.weights_dtype)
    if cfg.norm == "rmsnorm":
      y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
      if cfg.norm_zero_centred:
        return (y * (1.0 + scale.astype(jnp.float32))).astype(cfg.compute_dtype)
      return scale.astype(cfg.compute_dtype) * y.astype(cfg.compute_dtype)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), cfg.weights_dtype)
    centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True)
                                + cfg.norm_eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(cfg.compute_dtype)


def _dense(cfg: TransformerConfig, features: int, use_bias: bool, name: str) -> "Dense":
  return Dense(cfg, features, use_bias, name=name)


def _lora_a_init(key, shape, dtype=jnp.float32):
  """PEFT's kaiming-uniform(a=sqrt(5)) of A: uniform(+-1/sqrt(in)) for A [in, r]."""
  bound = shape[0] ** -0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class Dense(nn.Module):
  """``nn.Dense`` (same params, same numerics) plus, when ``config.lora`` targets this
  projection and the apply has a "lora" collection, ``(x A B) * alpha / rank`` from
  variables ``lora/.../a`` [in, r] and ``b`` [r, out] (float32, cast to the compute dtype).
  Without the "lora" collection it is the base projection alone (the reference)."""

  config: TransformerConfig
  features: int
  use_bias: bool

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    kernel = self.param("kernel", _init, (x.shape[-1], self.features), cfg.weights_dtype)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), cfg.weights_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=cfg.compute_dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    if bias is not None:
      y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    lora = cfg.lora
    if lora is None or self.name not in lora.targets:
      return y
    if not (self.is_initializing() or self.has_variable("lora", "a")):
      return y  # adapters off
    a = self.variable("lora", "a", _lora_a_init, self.make_rng("params") if
                      self.is_initializing() else None, (x.shape[-1], lora.rank)).value
    b = self.variable("lora", "b", jnp.zeros, (lora.rank, self.features), jnp.float32).value
    h = x
    if lora.dropout > 0 and self.has_rng("dropout"):
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - lora.dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - lora.dropout), 0).astype(h.dtype)
    low = h @ a.astype(cfg.compute_dtype)  # [..., r]
    return y + (low @ b.astype(cfg.compute_dtype)) * jnp.asarray(lora.scale, cfg.compute_dtype)


class Attention(nn.Module):
  """Grouped-query self-attention; ``sliding`` marks a sliding-window layer (its RoPE base is
  ``local_rope_theta`` when set; the window itself is in the bias)."""

  config: TransformerConfig
  sliding: bool = False

  @nn.compact
  def __call__(self, x, positions, bias, layer_cache, index, sliding=None):
    """x [B, T, D]; bias [B, 1, T, S]; layer_cache (k, v) each [B, K, S, H] or None;
    ``sliding`` (a traced [] bool, scanned layers) overrides the attribute when given."""
    cfg = self.config
    B, T, _ = x.shape
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = _dense(cfg, N * H, cfg.qkv_bias, "q_proj")(x).reshape(B, T, N, H)
    k = _dense(cfg, K * H, cfg.qkv_bias, "k_proj")(x).reshape(B, T, K, H)
    v = _dense(cfg, K * H, cfg.qkv_bias, "v_proj")(x).reshape(B, T, K, H)
    if cfg.qk_norm:  # per head, over H (Qwen3, Gemma 3)
      q = Norm(cfg, name="q_norm")(q)
      k = Norm(cfg, name="k_norm")(k)
    if cfg.positions == "rope":
      inv_freq = layer_inverse_frequencies(cfg, self.sliding if sliding is None else sliding)
      q = apply_rope(q, positions, inv_freq)
      k = apply_rope(k, positions, inv_freq)
    k = k.transpose(0, 2, 1, 3)  # [B, K, T, H]
    v = v.transpose(0, 2, 1, 3)  # [B, K, T, H]
    if layer_cache is not None:
      cache_k, cache_v = layer_cache
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, 0, index, 0))
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, index, 0))
    new_cache = (k, v)
    q = q.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    spec = _ScoreSpec(cfg.query_pre_attn_scalar or H, cfg.attn_logit_softcap)
    if cfg.attention_impl != "einsum":  # jax.nn.dot_product_attention: [B, T, N, H] layout
      out = library_attention(q.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H),
                              k.astype(q.dtype).transpose(0, 2, 1, 3),
                              v.astype(cfg.compute_dtype).transpose(0, 2, 1, 3), bias, spec,
                              cfg.attention_impl).reshape(B, T, N * H)
    else:
      out = _causal_attention(q, k.astype(q.dtype), v.astype(cfg.compute_dtype), bias, index,
                              cfg.attention_block, cfg.compute_dtype, spec)  # [B, K, G, T, H]
      out = out.transpose(0, 3, 1, 2, 4).reshape(B, T, N * H)  # [B, T, N*H]
    return _dense(cfg, cfg.embed_dim, cfg.out_bias, "o_proj")(out), new_cache


def layer_inverse_frequencies(cfg: TransformerConfig, sliding):
  """RoPE inverse frequencies [H/2] of a layer: ``local_rope_theta``'s (unscaled) on a
  sliding layer when set, else ``rope_theta``'s. ``sliding`` is a Python bool or, for scanned
  layers, a traced [] bool that selects between the two sets."""
  global_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
  if cfg.local_rope_theta is None or sliding is False:
    return global_freq
  local_freq = inverse_frequencies(cfg.head_dim, cfg.local_rope_theta)
  if sliding is True:
    return local_freq
  return jnp.where(sliding, local_freq, global_freq)


def softcap(x, cap: float | None):
  """``cap * tanh(x / cap)`` (Gemma 2's soft-capping of scores and logits); x when None."""
  return x if cap is None else cap * jnp.tanh(x / cap)


class _ScoreSpec(NamedTuple):
  """How raw scores q.k become logits: times ``scalar ** -0.5``, then soft-capped."""

  scalar: float
  cap: float | None = None


def _attention(q, k, v, bias, dtype, spec: _ScoreSpec | None = None):
  """softmax(cap(q k^T / sqrt(scalar)) + bias) v (scalar H by default): q [B, K, G, T, H],
  k/v [B, K, S, H], bias [B, 1, T, S]."""
  spec = spec or _ScoreSpec(q.shape[-1])
  scores = jnp.einsum("BKGTH,BKSH->BKGTS", q, k,
                      preferred_element_type=jnp.float32) * (spec.scalar ** -0.5)
  scores = softcap(scores, spec.cap)
  probs = jax.nn.softmax(scores + bias[:, :, None], axis=-1).astype(dtype)
  return jnp.einsum("BKGTS,BKSH->BKGTH", probs, v)


def library_attention(q, k, v, bias, spec: _ScoreSpec, implementation: str):
  """``jax.nn.dot_product_attention`` with our mask semantics: q [B, T, N, H], k/v
  [B, S, K, H] (grouped heads), bias [B, 1, T, S] (0 visible, ``_NEG_INF`` hidden).

  ``"xla"`` passes the visibility as a boolean mask (a query with no visible key, a pad,
  gets a finite uniform softmax, as ours); ``"cudnn"`` (GPU, bf16 / fp16) passes the bias in
  the compute dtype, clipped to its finite range. No soft-capping (the config refuses it)."""
  if implementation == "xla":
    return jax.nn.dot_product_attention(q, k, v, mask=bias > _NEG_INF / 2,
                                        scale=spec.scalar ** -0.5, implementation="xla")
  low = jnp.finfo(q.dtype).min / 2
  return jax.nn.dot_product_attention(q, k, v, bias=jnp.maximum(bias, low).astype(q.dtype),
                                      scale=spec.scalar ** -0.5, implementation="cudnn")


def _causal_attention(q, k, v, bias, index, block: int, dtype, spec: _ScoreSpec | None = None):
  """``_attention``; when the queries are the whole sequence (slots 0..T-1, T = S), query
  block [a, b) only reads keys [0, b): the keys after it are masked by causality, so
  skipping them changes nothing at real tokens and saves up to half the work."""
  T, S = q.shape[3], k.shape[2]
  if not block or T != S or T <= block or T % block or not isinstance(index, int):
    return _attention(q, k, v, bias, dtype, spec)
  outs = [_attention(q[:, :, :, a:a + block], k[:, :, :a + block], v[:, :, :a + block],
                     bias[:, :, a:a + block, :a + block], dtype, spec)
          for a in range(0, T, block)]
  return jnp.concatenate(outs, axis=3)


class Mlp(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    act = _ACTIVATIONS[cfg.activation]
    if cfg.gated_mlp:
      gate = _dense(cfg, cfg.mlp_dim, cfg.mlp_bias, "gate_proj")(x)
      up = _dense(cfg, cfg.mlp_dim, cfg.mlp_bias, "up_proj")(x)
      return _dense(cfg, cfg.embed_dim, cfg.mlp_bias, "down_proj")(act(gate) * up)
    hidden = act(_dense(cfg, cfg.mlp_dim, cfg.mlp_bias, "up_proj")(x))
    return _dense(cfg, cfg.embed_dim, cfg.mlp_bias, "down_proj")(hidden)


class Block(nn.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); with
  ``post_norms`` (Gemma) each branch's output is normed too: x + norm(attn(norm(x)))."""

  config: TransformerConfig
  sliding: bool = False

  @nn.compact
  def __call__(self, x, positions, bias, layer_cache, index, sliding=None):
    cfg = self.config
    attn_out, new_cache = Attention(cfg, self.sliding, name="attn")(
        Norm(cfg, name="attn_norm")(x), positions, bias, layer_cache, index, sliding)
    if cfg.post_norms:
      attn_out = Norm(cfg, name="post_attn_norm")(attn_out)
    x = x + attn_out
    mlp_out = Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x))
    if cfg.post_norms:
      mlp_out = Norm(cfg, name="post_mlp_norm")(mlp_out)
    return x + mlp_out, new_cache


def positions_from_mask(attention_mask: jax.Array, offset=None) -> jax.Array:
  """``cumsum(mask) - 1`` clipped at 0, shifted by ``offset`` [B] real tokens before."""
  positions = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1
  if offset is not None:
    positions = positions + offset[:, None]
  return jnp.maximum(positions, 0)


def attention_bias(query_slots, key_mask, sliding_window=None, segment_ids=None,
                   prefix_ids=None, positions=None):
  """Additive bias [B, 1, T, S]: key slot j is visible to query slot i iff j <= i and real.

  With ``segment_ids`` [B, T] (whole sequences only, T = S) several sequences share a row:
  query i also needs key j in its own segment, or in segment ``prefix_ids[i]`` (the prompt a
  response continues: shared-prompt pairs). ``prefix_ids`` defaults to the segment itself
  (block-diagonal packing). Positions [B, T] then restart per sequence, and a sliding window
  counts positions, not slots.
  """
  key_slots = jnp.arange(key_mask.shape[1])
  visible = key_slots[None, :] <= query_slots[:, None]  # [T, S]
  if sliding_window is not None and segment_ids is None:
    visible &= query_slots[:, None] - key_slots[None, :] < sliding_window
  visible = visible[None, :, :] & (key_mask[:, None, :] > 0)  # [B, T, S]
  if segment_ids is not None:
    if sliding_window is not None:
      visible &= positions[:, :, None] - positions[:, None, :] < sliding_window
    prefix_ids = segment_ids if prefix_ids is None else prefix_ids
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, S]
    visible &= same | (segment_ids[:, None, :] == prefix_ids[:, :, None])
  return jnp.where(visible, 0.0, _NEG_INF).astype(jnp.float32)[:, None]


def window_biases(cfg: TransformerConfig, query_slots, key_mask, segment_ids=None,
                  prefix_ids=None, positions=None) -> tuple[list[jax.Array], list[int]]:
  """``(biases, which)``: ``attention_bias`` under each distinct sliding window of the
  layers, built once each (Gemma alternates two), and the index into ``biases`` of each
  layer's window."""
  windows = []
  for i in range(cfg.num_layers):
    if cfg.layer_window(i) not in windows:
      windows.append(cfg.layer_window(i))
  biases = [attention_bias(query_slots, key_mask, window, segment_ids, prefix_ids, positions)
            for window in windows]
  return biases, [windows.index(cfg.layer_window(i)) for i in range(cfg.num_layers)]


def layer_biases(cfg: TransformerConfig, query_slots, key_mask, segment_ids=None,
                 prefix_ids=None, positions=None) -> list[jax.Array]:
  """``attention_bias`` for each layer, under its own sliding window (``window_biases``)."""
  biases, which = window_biases(cfg, query_slots, key_mask, segment_ids, prefix_ids,
                                positions)
  return [biases[w] for w in which]


def _block_class(cfg: TransformerConfig, static_index: bool, scanned: bool = False):
  """``Block``, rematerialised under ``cfg.remat``; without a cache the write index is the
  constant 0: kept static (``static_index``) so blocked attention still applies."""
  if not cfg.remat:
    return Block
  # Inside a scan there is no CSE across iterations to prevent (flax's advice).
  return nn.remat(Block, static_argnums=(5,) if static_index else (), prevent_cse=not scanned)


class Transformer(nn.Module):
  """Decoder-only LM. ``output="hidden"`` drops the LM head (for reward / value models)."""

  config: TransformerConfig
  output: str = "logits"

  @nn.compact
  def __call__(self, tokens, attention_mask=None, positions=None, cache: KVCache | None = None,
               return_hidden: bool = False, segment_ids=None, prefix_ids=None) -> Any:
    """``segment_ids`` / ``prefix_ids`` [B, T]: several sequences per row (``attention_bias``;
    training passes only, with their own ``positions``)."""
    cfg = self.config
    if segment_ids is not None and (cache is not None or positions is None):
      raise ValueError("segment_ids need explicit positions and no cache")
    B, T = tokens.shape
    if attention_mask is None:
      attention_mask = jnp.ones((B, T), jnp.int32)
    attention_mask = attention_mask.astype(jnp.int32)
    embed = self.param("embed", _init, (cfg.vocab_size, cfg.embed_dim), cfg.weights_dtype)
    if cache is None:
      index, key_mask = 0, attention_mask
      if positions is None:
        positions = positions_from_mask(attention_mask)
    else:
      index = cache.index
      key_mask = jax.lax.dynamic_update_slice(cache.mask, attention_mask, (0, index))
      if positions is None:
        positions = positions_from_mask(attention_mask, cache.lengths)
    x = jnp.take(constrain_embedding(embed), tokens, axis=0).astype(cfg.compute_dtype)
    if cfg.embed_scale:  # sqrt(D) rounded to the compute dtype, as transformers' Gemma does
      x = x * jnp.asarray(cfg.embed_dim ** 0.5, cfg.compute_dtype)
    x = constrain_residual(x, embed)  # [B, T, D]; tensor meshes: rows over (data, fsdp)
    if cfg.positions == "learned":
      pos_embed = self.param("pos_embed", nn.initializers.normal(0.01),
                             (cfg.max_seq_len, cfg.embed_dim), cfg.weights_dtype)
      x = x + jnp.take(pos_embed, positions, axis=0).astype(cfg.compute_dtype)
    biases, which = window_biases(cfg, index + jnp.arange(T), key_mask, segment_ids,
                                  prefix_ids, positions)  # <= 2 x [B, 1, T, S]
    layers = self._scanned_layers if cfg.scan_layers else self._unrolled_layers
    x, new_keys, new_values = layers(x, positions, biases, which, cache, index, embed)
    hidden = Norm(cfg, name="final_norm")(x)  # [B, T, D]
    out = hidden if self.output == "hidden" else self._logits(hidden, embed)
    if return_hidden and self.output != "hidden":
      out = (out, hidden)
    if cache is None:
      return out
    new_cache = KVCache(keys=new_keys, values=new_values, mask=key_mask,
                        lengths=cache.lengths + attention_mask.sum(axis=1),
                        index=cache.index + T)
    return out, new_cache

  def _unrolled_layers(self, x, positions, biases, which, cache, index, embed):
    """Blocks ``layers_0`` .. ``layers_{L-1}`` one after another; returns ``(x, keys,
    values)``, the cache's new per-layer tuples (None without a cache)."""
    cfg = self.config
    block_cls = _block_class(cfg, static_index=cache is None)
    new_keys, new_values = [], []
    for i in range(cfg.num_layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      block = block_cls(cfg, sliding=cfg.layer_window(i) is not None, name=f"layers_{i}")
      x, (k, v) = block(x, positions, biases[which[i]], layer_cache, index)
      x = constrain_residual(x, embed)
      new_keys.append(k)
      new_values.append(v)
    if cache is None:
      return x, None, None
    return x, tuple(new_keys), tuple(new_values)

  def _scanned_layers(self, x, positions, biases, which, cache, index, embed):
    """One ``Block`` under ``nn.scan`` over the stacked params ``layers`` [L, ...] (and the
    stacked cache [L, B, K, S, H]); returns ``(x, keys, values)`` as ``_unrolled_layers``.

    What differs between layers is scanned with them: the index of the layer's bias in
    ``biases`` (<= 2 distinct, never one per layer) and, when sliding and global layers
    have different RoPE bases, the layer's sliding flag."""
    cfg = self.config
    sliding = [cfg.layer_window(i) is not None for i in range(cfg.num_layers)]
    mixed_rope = cfg.local_rope_theta is not None and len(set(sliding)) > 1
    bias_stack = jnp.stack(biases) if len(biases) > 1 else None  # [W, B, 1, T, S], W = 2

    def body(block, x, xs):
      which_i, sliding_i, layer_cache = xs
      bias = (biases[0] if bias_stack is None
              else jax.lax.dynamic_index_in_dim(bias_stack, which_i, keepdims=False))
      x, new_cache = block(x, positions, bias, layer_cache, index,
                           sliding_i if mixed_rope else None)
      return constrain_residual(x, embed), (None if layer_cache is None else new_cache)

    # LoRA adapters (a "lora" collection, when present) are stacked like the params.
    scan = nn.scan(body, variable_axes={"params": 0, "lora": 0},
                   split_rngs={"params": True, "dropout": True}, length=cfg.num_layers)
    block_cls = _block_class(cfg, static_index=cache is None, scanned=True)
    block = block_cls(cfg, sliding=sliding[0], name="layers")  # the flag of a uniform stack
    xs = (jnp.asarray(which, jnp.int32), jnp.asarray(sliding),
          None if cache is None else (cache.keys, cache.values))
    x, new_cache = scan(block, x, xs)
    if cache is None:
      return x, None, None
    return x, new_cache[0], new_cache[1]  # [L, B, K, S, H] each

  def _logits(self, hidden, embed):
    cfg = self.config
    if cfg.tie_embeddings:
      weight = embed  # [V, D]
    else:
      weight = self.param("lm_head", _init, (cfg.vocab_size, cfg.embed_dim), cfg.weights_dtype)
    return lm_head(cfg, hidden, weight)


def lm_head(cfg: TransformerConfig, hidden, weight) -> jax.Array:
  """Logits ``[..., V]`` (float32) of ``hidden [..., D]`` under the ``[V, D]`` output
  projection, the matmul in ``cfg``'s compute dtype; soft-capped by ``final_logit_softcap``."""
  logits = jnp.einsum("...D,VD->...V", hidden, weight.astype(cfg.compute_dtype),
                      preferred_element_type=jnp.float32)
  return softcap(logits, cfg.final_logit_softcap)

"""Conversion between Hugging Face ``config.json`` dictionaries and ``TransformerConfig``."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxalign.models.config import RopeScaling, TransformerConfig

SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                     "gelu": "gelu", "relu": "relu", "silu": "silu"}
_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                  "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
                  "gemma3_text": "Gemma3ForCausalLM"}
_GEMMA = ("gemma2", "gemma3_text")
_LAYER_TYPES = ("sliding_attention", "full_attention")


class CheckpointError(ValueError):
  """A checkpoint folder that cannot be read as promised; the message names file and key."""


def _first_id(value):
  return value[0] if isinstance(value, (list, tuple)) and value else value


def _require(d: dict, key: str, where: str):
  if key not in d:
    raise CheckpointError(f"{where}: missing key {key!r}")
  return d[key]


def config_from_hf(d: dict[str, Any], where: str = "config.json", **overrides) -> TransformerConfig:
  """Builds our config from a Hugging Face config dict (``where`` names it in errors)."""
  model_type = d.get("model_type")
  if model_type == "gemma3":
    raise CheckpointError(
        f"{where}: model_type 'gemma3' (the multimodal Gemma3ForConditionalGeneration) is not "
        "supported; text-only Gemma 3 checkpoints (model_type 'gemma3_text') are")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(
        f"{where}: model_type {model_type!r} is not supported; key 'model_type' must be one "
        f"of {', '.join(SUPPORTED_MODEL_TYPES)}")
  ids = dict(bos_token_id=_first_id(d.get("bos_token_id")),
             eos_token_id=_first_id(d.get("eos_token_id")),
             pad_token_id=_first_id(d.get("pad_token_id")))
  if model_type == "gpt2":
    fields = _gpt2_fields(d, where)
  elif model_type in _GEMMA:
    fields = _gemma_fields(d, where, model_type)
  else:
    fields = _llama_fields(d, where, model_type)
  fields.update(ids)
  fields.update(overrides)
  return TransformerConfig(model_type=model_type, **fields)


def _activation(d, where, key, default):
  act = d.get(key) or default
  if act not in _GPT2_ACTIVATIONS:
    raise CheckpointError(f"{where}: key {key!r}={act!r} is not supported")
  return _GPT2_ACTIVATIONS[act]


def _gpt2_fields(d, where):
  if d.get("scale_attn_by_inverse_layer_idx"):
    raise CheckpointError(f"{where}: key 'scale_attn_by_inverse_layer_idx'=true is not supported")
  width = _require(d, "n_embd", where)
  heads = _require(d, "n_head", where)
  return dict(
      vocab_size=_require(d, "vocab_size", where), embed_dim=width,
      num_layers=_require(d, "n_layer", where), num_heads=heads, num_kv_heads=heads,
      head_dim=width // heads, mlp_dim=d.get("n_inner") or 4 * width,
      max_seq_len=d.get("n_positions", 1024), norm="layernorm",
      norm_eps=d.get("layer_norm_epsilon", 1e-5),
      activation=_activation(d, where, "activation_function", "gelu_new"),
      gated_mlp=False, positions="learned", tie_embeddings=d.get("tie_word_embeddings", True),
      qkv_bias=True, out_bias=True, mlp_bias=True)


def _rope(d, where):
  params = d.get("rope_parameters") or {}
  scaling = d.get("rope_scaling") or params
  theta = params.get("rope_theta", d.get("rope_theta", 10000.0))
  rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
  if rope_type == "default":
    return theta, None
  if rope_type == "llama3":
    return theta, RopeScaling(
        factor=scaling["factor"], low_freq_factor=scaling["low_freq_factor"],
        high_freq_factor=scaling["high_freq_factor"],
        original_max_position_embeddings=scaling["original_max_position_embeddings"])
  raise CheckpointError(f"{where}: rope_type {rope_type!r} is not supported (default, llama3)")


def _llama_fields(d, where, model_type):
  """Llama, Mistral, Qwen2 and Qwen3 (Qwen3: q/k norm; attention_bias on q, k, v and o)."""
  width = _require(d, "hidden_size", where)
  heads = _require(d, "num_attention_heads", where)
  theta, scaling = _rope(d, where)
  qkv_bias = model_type == "qwen2" or bool(d.get("attention_bias", False))
  window = d.get("sliding_window") if model_type == "mistral" else None
  if model_type in ("qwen2", "qwen3") and d.get("use_sliding_window"):
    raise CheckpointError(f"{where}: key 'use_sliding_window'=true is not supported for "
                          f"{model_type}")
  default_head_dim = 128 if model_type == "qwen3" else width // heads  # transformers' default
  return dict(
      vocab_size=_require(d, "vocab_size", where), embed_dim=width,
      num_layers=_require(d, "num_hidden_layers", where), num_heads=heads,
      num_kv_heads=d.get("num_key_value_heads") or heads,
      head_dim=d.get("head_dim") or default_head_dim,
      mlp_dim=_require(d, "intermediate_size", where),
      max_seq_len=d.get("max_position_embeddings", 2048), norm="rmsnorm",
      norm_eps=d.get("rms_norm_eps", 1e-6), activation="silu", gated_mlp=True,
      positions="rope", rope_theta=theta, rope_scaling=scaling,
      tie_embeddings=d.get("tie_word_embeddings", False), qkv_bias=qkv_bias,
      out_bias=model_type in ("llama", "qwen3") and bool(d.get("attention_bias", False)),
      mlp_bias=model_type == "llama" and bool(d.get("mlp_bias", False)),
      sliding_window=window, qk_norm=model_type == "qwen3")


def _sliding_layers(d, where, num_layers: int, pattern: int) -> tuple[int, ...]:
  """The sliding-window layers: from ``layer_types``, else every layer but each
  ``pattern``-th (Gemma 2: 2; Gemma 3: ``sliding_window_pattern``, 6)."""
  types = d.get("layer_types")
  if types is None:
    pattern = d.get("sliding_window_pattern") or d.get("_sliding_window_pattern") or pattern
    types = [_LAYER_TYPES[(i + 1) % pattern == 0] for i in range(num_layers)]
  if len(types) != num_layers or set(types) - set(_LAYER_TYPES):
    raise CheckpointError(f"{where}: key 'layer_types' must list {num_layers} of "
                          f"{', '.join(_LAYER_TYPES)}")
  return tuple(i for i, t in enumerate(types) if t == "sliding_attention")


def _gemma3_rope(d, where) -> tuple[float, RopeScaling | None, float]:
  """(global theta, global scaling, local theta): ``rope_parameters`` keyed by layer type,
  or the older ``rope_theta`` / ``rope_scaling`` / ``rope_local_base_freq`` keys."""
  params = d.get("rope_parameters") or {}
  by_type = any(t in params for t in _LAYER_TYPES)
  full = dict(rope_parameters=params.get("full_attention") if by_type else params,
              rope_scaling=d.get("rope_scaling"), rope_theta=d.get("rope_theta", 1e6))
  theta, scaling = _rope(full, where)
  local = dict(rope_parameters=params.get("sliding_attention") if by_type else None,
               rope_theta=d.get("rope_local_base_freq", 1e4))
  local_theta, local_scaling = _rope(local, where)
  if local_scaling is not None:
    raise CheckpointError(f"{where}: RoPE scaling on sliding layers is not supported")
  return theta, scaling, local_theta


def _gemma_fields(d, where, model_type):
  """Gemma 2 and Gemma 3 text; missing keys take transformers' defaults."""
  if d.get("use_bidirectional_attention"):
    raise CheckpointError(f"{where}: key 'use_bidirectional_attention'=true is not supported")
  gemma3 = model_type == "gemma3_text"
  layers = _require(d, "num_hidden_layers", where)
  heads = _require(d, "num_attention_heads", where)
  if gemma3:
    theta, scaling, local_theta = _gemma3_rope(d, where)
  else:
    (theta, scaling), local_theta = _rope(d, where), None
  window = d.get("sliding_window", 4096)
  sliding = _sliding_layers(d, where, layers, 6 if gemma3 else 2)
  if window is None and sliding:
    raise CheckpointError(f"{where}: sliding layers in 'layer_types' but no 'sliding_window'")
  bias = bool(d.get("attention_bias", False))
  return dict(
      vocab_size=_require(d, "vocab_size", where), embed_dim=_require(d, "hidden_size", where),
      num_layers=layers, num_heads=heads, num_kv_heads=d.get("num_key_value_heads") or heads,
      head_dim=d.get("head_dim") or 256, mlp_dim=_require(d, "intermediate_size", where),
      max_seq_len=d.get("max_position_embeddings", 131072 if gemma3 else 8192),
      norm="rmsnorm", norm_eps=d.get("rms_norm_eps", 1e-6),
      activation=_activation(d, where, "hidden_activation",
                             d.get("hidden_act") or "gelu_pytorch_tanh"),
      gated_mlp=True, positions="rope", rope_theta=theta, rope_scaling=scaling,
      local_rope_theta=local_theta, tie_embeddings=d.get("tie_word_embeddings", True),
      qkv_bias=bias, out_bias=bias, sliding_window=window,
      sliding_layers=sliding if window is not None else None, qk_norm=gemma3,
      norm_zero_centred=True, post_norms=True, embed_scale=True,
      query_pre_attn_scalar=d.get("query_pre_attn_scalar", 256),
      # transformers' Gemma 3 attention ignores attn_logit_softcapping.
      attn_logit_softcap=None if gemma3 else d.get("attn_logit_softcapping", 50.0),
      final_logit_softcap=d.get("final_logit_softcapping", None if gemma3 else 30.0))


def config_to_hf(config: TransformerConfig) -> dict[str, Any]:
  """The ``config.json`` that transformers reads back into the same architecture."""
  c = config
  common = dict(model_type=c.model_type, architectures=[_ARCHITECTURES[c.model_type]],
                vocab_size=c.vocab_size, tie_word_embeddings=c.tie_embeddings,
                bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
                pad_token_id=c.pad_token_id, torch_dtype=c.param_dtype)
  if c.model_type == "gpt2":
    act = {v: k for k, v in reversed(_GPT2_ACTIVATIONS.items())}[c.activation]
    return dict(common, n_embd=c.embed_dim, n_layer=c.num_layers, n_head=c.num_heads,
                n_inner=c.mlp_dim, n_positions=c.max_seq_len, n_ctx=c.max_seq_len,
                layer_norm_epsilon=c.norm_eps, activation_function=act)
  rope_scaling = None
  if c.rope_scaling is not None:
    s = c.rope_scaling
    rope_scaling = dict(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                        high_freq_factor=s.high_freq_factor,
                        original_max_position_embeddings=s.original_max_position_embeddings)
  out = dict(common, hidden_size=c.embed_dim, num_hidden_layers=c.num_layers,
             num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
             head_dim=c.head_dim, intermediate_size=c.mlp_dim,
             max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps,
             hidden_act="silu", rope_theta=c.rope_theta, rope_scaling=rope_scaling)
  if c.model_type == "llama":
    out.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
  if c.model_type == "mistral":
    out.update(sliding_window=c.sliding_window)
  if c.model_type == "qwen3":
    out.update(attention_bias=c.qkv_bias, use_sliding_window=False)
  if c.model_type in _GEMMA:
    out = _gemma_to_hf(c, out)
  _check_round_trip(c, out)
  return out


def _gemma_to_hf(c: TransformerConfig, out: dict) -> dict:
  del out["hidden_act"]
  act = {v: k for k, v in _GPT2_ACTIVATIONS.items()}[c.activation]  # gelu_pytorch_tanh
  scalar = c.query_pre_attn_scalar or c.head_dim
  out.update(hidden_activation=act, attention_bias=c.qkv_bias,
             query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,
             sliding_window=c.sliding_window,
             layer_types=[_LAYER_TYPES[c.layer_window(i) is None] for i in range(c.num_layers)],
             attn_logit_softcapping=c.attn_logit_softcap,
             final_logit_softcapping=c.final_logit_softcap)
  if c.model_type == "gemma3_text":
    out.update(rope_local_base_freq=c.local_rope_theta or c.rope_theta)
  return out


def _check_round_trip(c: TransformerConfig, out: dict) -> None:
  """transformers must build the same architecture from ``out``: a switch the family's
  transformers class does not have (say post_norms on a llama) has no Hugging Face form."""
  kept = dict(dtype=c.dtype, param_dtype=c.param_dtype, remat=c.remat,
              attention_block=c.attention_block, attention_impl=c.attention_impl,
              scan_layers=c.scan_layers)
  back = _canonical(config_from_hf(out, where=f"a {c.model_type} config.json", **kept))
  c = _canonical(c)
  differ = [f"{f.name} {getattr(c, f.name)!r}" for f in dataclasses.fields(c)
            if getattr(back, f.name) != getattr(c, f.name)]
  if differ:
    raise CheckpointError(f"this {c.model_type} config has no Hugging Face form: transformers' "
                          f"{_ARCHITECTURES[c.model_type]} has no {', '.join(differ[:4])}")


def _canonical(c: TransformerConfig) -> TransformerConfig:
  """``c`` with the switches that equal their default behaviour at their defaults."""
  changes = {}
  if c.query_pre_attn_scalar == c.head_dim:
    changes["query_pre_attn_scalar"] = None
  if c.sliding_window is None or c.sliding_layers == tuple(range(c.num_layers)):
    changes["sliding_layers"] = None
  if c.local_rope_theta == c.rope_theta and c.rope_scaling is None:
    changes["local_rope_theta"] = None
  return c.replace(**changes)

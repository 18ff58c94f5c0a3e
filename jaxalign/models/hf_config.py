"""Conversion between Hugging Face ``config.json`` dictionaries and ``TransformerConfig``."""

from __future__ import annotations

from typing import Any

from jaxalign.models.config import RopeScaling, TransformerConfig

SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "mistral", "qwen2")
_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                     "gelu": "gelu", "relu": "relu", "silu": "silu"}
_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                  "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


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
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(
        f"{where}: model_type {model_type!r} is not supported; key 'model_type' must be one "
        f"of {', '.join(SUPPORTED_MODEL_TYPES)}")
  ids = dict(bos_token_id=_first_id(d.get("bos_token_id")),
             eos_token_id=_first_id(d.get("eos_token_id")),
             pad_token_id=_first_id(d.get("pad_token_id")))
  if model_type == "gpt2":
    fields = _gpt2_fields(d, where)
  else:
    fields = _llama_fields(d, where, model_type)
  fields.update(ids)
  fields.update(overrides)
  return TransformerConfig(model_type=model_type, **fields)


def _gpt2_fields(d, where):
  if d.get("scale_attn_by_inverse_layer_idx"):
    raise CheckpointError(f"{where}: key 'scale_attn_by_inverse_layer_idx'=true is not supported")
  act = d.get("activation_function", "gelu_new")
  if act not in _GPT2_ACTIVATIONS:
    raise CheckpointError(f"{where}: key 'activation_function'={act!r} is not supported")
  width = _require(d, "n_embd", where)
  heads = _require(d, "n_head", where)
  return dict(
      vocab_size=_require(d, "vocab_size", where), embed_dim=width,
      num_layers=_require(d, "n_layer", where), num_heads=heads, num_kv_heads=heads,
      head_dim=width // heads, mlp_dim=d.get("n_inner") or 4 * width,
      max_seq_len=d.get("n_positions", 1024), norm="layernorm",
      norm_eps=d.get("layer_norm_epsilon", 1e-5), activation=_GPT2_ACTIVATIONS[act],
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
  width = _require(d, "hidden_size", where)
  heads = _require(d, "num_attention_heads", where)
  theta, scaling = _rope(d, where)
  qkv_bias = model_type == "qwen2" or bool(d.get("attention_bias", False))
  window = d.get("sliding_window") if model_type == "mistral" else None
  if model_type == "qwen2" and d.get("use_sliding_window"):
    raise CheckpointError(f"{where}: key 'use_sliding_window'=true is not supported for qwen2")
  return dict(
      vocab_size=_require(d, "vocab_size", where), embed_dim=width,
      num_layers=_require(d, "num_hidden_layers", where), num_heads=heads,
      num_kv_heads=d.get("num_key_value_heads") or heads,
      head_dim=d.get("head_dim") or width // heads,
      mlp_dim=_require(d, "intermediate_size", where),
      max_seq_len=d.get("max_position_embeddings", 2048), norm="rmsnorm",
      norm_eps=d.get("rms_norm_eps", 1e-6), activation="silu", gated_mlp=True,
      positions="rope", rope_theta=theta, rope_scaling=scaling,
      tie_embeddings=d.get("tie_word_embeddings", False), qkv_bias=qkv_bias,
      out_bias=model_type == "llama" and bool(d.get("attention_bias", False)),
      mlp_bias=model_type == "llama" and bool(d.get("mlp_bias", False)),
      sliding_window=window)


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
  return out

"""Transformer configuration: one frozen dataclass for the GPT-2, Llama and Gemma families."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

ModelType = Literal["gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"]


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style frequency-dependent RoPE scaling (``rope_type == "llama3"``)."""

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters on the projections named in ``targets``: ``y = x W + (x A B) *
  alpha / rank``, A [in, rank] random (PEFT's init), B [rank, out] zeros (so step 0 is the
  base). ``dropout`` drops adapter inputs when the apply has a "dropout" rng."""

  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = LORA_TARGETS

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
    if self.rank < 1:
      raise ValueError(f"lora rank must be >= 1, got {self.rank}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
    unknown = sorted(set(self.targets) - set(LORA_TARGETS))
    if unknown:
      raise ValueError(f"lora targets {unknown} are not projections ({', '.join(LORA_TARGETS)})")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """A decoder-only transformer.

  GPT-2: learned positions, LayerNorm, GELU (tanh), tied embeddings, biases everywhere.
  Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention, untied embeddings, no biases.
  Mistral and Qwen2 are Llama with a sliding window or q/k/v biases; Qwen3 is Llama with
  RMSNorm on each head's queries and keys (``qk_norm``).
  Gemma 2 / 3: Llama plus zero-centred norms, norms after attention and MLP too, GeGLU,
  sqrt(D)-scaled embeddings, ``query_pre_attn_scalar``, sliding-window layers alternating
  with global ones (``sliding_layers``), tied embeddings; Gemma 2 soft-caps attention scores
  and logits, Gemma 3 has q/k norm and its own RoPE base on sliding layers.
  The Gemma / Qwen3 switches default to off, leaving the other families unchanged.
  """

  model_type: ModelType = "llama"
  vocab_size: int = 256
  embed_dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 4
  head_dim: int = 16
  mlp_dim: int = 256
  max_seq_len: int = 512
  # Architecture switches.
  norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
  norm_eps: float = 1e-6
  activation: Literal["gelu_tanh", "gelu", "silu", "relu"] = "silu"
  gated_mlp: bool = True
  positions: Literal["learned", "rope"] = "rope"
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  tie_embeddings: bool = False
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  sliding_window: int | None = None
  # Layers that attend within sliding_window (None: all layers, as Mistral; Gemma: some).
  sliding_layers: tuple[int, ...] | None = None
  local_rope_theta: float | None = None  # RoPE base of sliding layers, unscaled (Gemma 3)
  qk_norm: bool = False            # a Norm over head_dim on q and k, before RoPE (Qwen3)
  norm_zero_centred: bool = False  # norms scale by (1 + scale), computed in f32 (Gemma)
  post_norms: bool = False         # a Norm on the attention and MLP outputs too (Gemma)
  embed_scale: bool = False        # token embeddings times sqrt(embed_dim) (Gemma)
  query_pre_attn_scalar: float | None = None  # scores times this ** -0.5 (None: head_dim)
  attn_logit_softcap: float | None = None     # scores -> cap * tanh(scores / cap) (Gemma 2)
  final_logit_softcap: float | None = None    # logits -> cap * tanh(logits / cap) (Gemma 2)
  # Token ids (informational; the sampler and data pipeline take their own).
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  pad_token_id: int | None = None
  # Numerics. Params are stored in param_dtype, matmuls run in dtype; logits are f32.
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  # Run the decoder blocks as one ``nn.scan`` over stacked params ``layers`` [L, ...] instead
  # of L unrolled copies ``layers_0`` .. ``layers_{L-1}``: the same results, a compile time
  # flat in depth (docs/models.md, "Scan over layers"; models/layer_stack.py converts).
  scan_layers: bool = False
  # Causal self-attention over a whole sequence (training, prefill) is computed in query
  # blocks of this size, each against only the keys it can see: ~37% fewer attention FLOPs
  # at T = 4 blocks. 0 turns it off. The result is the same (tested).
  attention_block: int = 64
  # Which kernel computes attention: "einsum" (ours: the block-causal einsum path above, XLA
  # fuses it on every backend), "xla" (jax.nn.dot_product_attention's XLA path) or "cudnn"
  # (its fused cuDNN kernel: GPU, bf16 / fp16 compute). Same masks and results (tested for
  # "xla" on CPU; "cudnn" by benchmarks/gpu_check.py on a GPU). No soft-capping but "einsum".
  attention_impl: Literal["einsum", "xla", "cudnn"] = "einsum"
  # Low-rank adapters (``jaxalign.models.lora``; a "lora" variable collection); None: off.
  lora: LoraConfig | None = None

  def __post_init__(self):
    if isinstance(self.lora, dict):  # a saved config's JSON
      object.__setattr__(self, "lora", LoraConfig(**self.lora))
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.positions == "rope" and self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
    if self.attention_impl not in ("einsum", "xla", "cudnn"):
      raise ValueError(f"attention_impl={self.attention_impl!r}: one of einsum, xla, cudnn")
    if self.attention_impl != "einsum" and self.attn_logit_softcap is not None:
      raise ValueError(f"attention_impl={self.attention_impl!r} has no attention soft-capping "
                       f"(attn_logit_softcap={self.attn_logit_softcap}): use einsum")
    if self.scan_layers and self.num_layers < 1:
      raise ValueError(f"scan_layers needs num_layers >= 1 (a scan of length "
                       f"{self.num_layers} has no params to stack): set scan_layers=False")
    if self.sliding_layers is not None:  # a JSON list (a saved config) becomes a tuple
      object.__setattr__(self, "sliding_layers", tuple(int(i) for i in self.sliding_layers))
      if self.sliding_window is None:
        raise ValueError("sliding_layers needs a sliding_window")
      if any(not 0 <= i < self.num_layers for i in self.sliding_layers):
        raise ValueError(f"sliding_layers {self.sliding_layers} are not all layers of "
                         f"num_layers={self.num_layers}")

  def layer_window(self, layer: int) -> int | None:
    """The sliding window of layer ``layer`` (None: it attends to all earlier tokens)."""
    if self.sliding_layers is None or layer in self.sliding_layers:
      return self.sliding_window
    return None

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weights_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> "TransformerConfig":
    return dataclasses.replace(self, **changes)


def gpt2_config(**overrides) -> TransformerConfig:
  """GPT-2 family defaults (sizes of the 124M model unless overridden)."""
  base = dict(
      model_type="gpt2", vocab_size=50257, embed_dim=768, num_layers=12, num_heads=12,
      num_kv_heads=12, head_dim=64, mlp_dim=3072, max_seq_len=1024, norm="layernorm",
      norm_eps=1e-5, activation="gelu_tanh", gated_mlp=False, positions="learned",
      tie_embeddings=True, qkv_bias=True, out_bias=True, mlp_bias=True,
      bos_token_id=50256, eos_token_id=50256)
  base.update(overrides)
  return TransformerConfig(**base)


def llama_config(**overrides) -> TransformerConfig:
  """Llama family defaults (a small shape unless overridden)."""
  base = dict(model_type="llama", norm="rmsnorm", norm_eps=1e-5, activation="silu",
              gated_mlp=True, positions="rope", tie_embeddings=False)
  base.update(overrides)
  return TransformerConfig(**base)


def tiny_gpt2(**overrides) -> TransformerConfig:
  """The built-in tiny GPT-2 used by tests, demos and the synthetic tasks."""
  base = dict(vocab_size=256, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=4,
              head_dim=16, mlp_dim=256, max_seq_len=256, bos_token_id=None,
              eos_token_id=255)
  base.update(overrides)
  return gpt2_config(**base)


def tiny_llama(**overrides) -> TransformerConfig:
  """The built-in tiny Llama (GQA: 4 query heads share 2 kv heads)."""
  base = dict(vocab_size=256, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
              head_dim=16, mlp_dim=128, max_seq_len=256, eos_token_id=2, bos_token_id=1)
  base.update(overrides)
  return llama_config(**base)

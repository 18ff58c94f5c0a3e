"""Tiny random-weight Hugging Face models, the independent reference for our transformer."""

from __future__ import annotations

import numpy as np

FAMILIES = ("gpt2", "llama", "qwen2", "mistral", "qwen3", "gemma2", "gemma3")
VOCAB = 128


def hf_config(name: str):
  import transformers as tf
  common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  if name == "gpt2":
    return tf.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=128, **common)
  llama_like = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    tie_word_embeddings=False, **common)
  if name == "llama":
    return tf.LlamaConfig(rope_theta=100.0, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16), **llama_like)
  if name == "qwen2":
    return tf.Qwen2Config(**llama_like)
  if name == "mistral":
    return tf.MistralConfig(sliding_window=8, **llama_like)
  if name == "qwen3":  # head_dim != hidden / heads, tied embeddings
    return tf.Qwen3Config(**dict(llama_like, head_dim=16, tie_word_embeddings=True))
  # Gemma: 3 layers, sliding (window 4 < the tests' 20 tokens), global, sliding; a query
  # scalar != head_dim; weights large enough (std 0.1) for the soft caps to bite.
  gemma = dict(llama_like, num_hidden_layers=3, head_dim=16, tie_word_embeddings=True,
               initializer_range=0.1,
               hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24,
               sliding_window=4,
               layer_types=["sliding_attention", "full_attention", "sliding_attention"])
  if name == "gemma2":
    return tf.Gemma2Config(attn_logit_softcapping=1.0, final_logit_softcapping=4.0, **gemma)
  if name == "gemma3":  # q/k norm, a local RoPE base; text only (Gemma3ForCausalLM)
    return tf.Gemma3TextConfig(rope_theta=1000.0, rope_local_base_freq=50.0, **gemma)
  raise ValueError(name)


def build_and_save(name: str, path: str, seed: int = 0) -> str:
  """Builds a random model with transformers, perturbs norms/biases off their init, saves it."""
  import torch
  import transformers as tf
  torch.manual_seed(seed)
  model = tf.AutoModelForCausalLM.from_config(hf_config(name), attn_implementation="eager")
  with torch.no_grad():  # non-trivial norms and biases, so a mapping mistake shows
    for pname, p in model.named_parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn_like(p))
  model.float().eval().save_pretrained(path, safe_serialization=True)
  return path


def load_hf(path: str):
  import transformers as tf
  return tf.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").float().eval()


def hf_logits(model, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """transformers' logits with positions derived from the mask (as its generate does)."""
  import torch
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


def padded_batch(seed: int, lengths, total: int, side: str):
  """Random tokens [B, total] with the given real lengths padded on ``side`` (pad id 0)."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), total), np.int64)
  mask = np.zeros((len(lengths), total), np.int64)
  for row, n in enumerate(lengths):
    cols = slice(total - n, total) if side == "left" else slice(0, n)
    tokens[row, cols] = rng.integers(3, VOCAB, n)
    mask[row, cols] = 1
  return tokens, mask

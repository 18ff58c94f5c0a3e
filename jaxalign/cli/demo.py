"""``jaxalign demo``: the built-in end-to-end smoke run on the default tiny policy."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models import Transformer, count_params, init_cache, init_params, tiny_gpt2


def _greedy(config, params, prompt, mask, new_tokens):
  """Prefill then a jitted one-token step with the KV cache; returns tokens and log-probs."""
  model = Transformer(config)
  B, P = prompt.shape
  cache = init_cache(config, B, P + new_tokens)
  logits, cache = jax.jit(model.apply)({"params": params}, prompt, attention_mask=mask,
                                       cache=cache)

  @jax.jit
  def step(cache, last_logits):
    logps = jax.nn.log_softmax(last_logits, axis=-1)
    token = jnp.argmax(logps, axis=-1)
    logits, cache = model.apply({"params": params}, token[:, None],
                                attention_mask=jnp.ones((B, 1), jnp.int32), cache=cache)
    return cache, logits[:, -1], token, jnp.take_along_axis(logps, token[:, None], 1)[:, 0]

  last, tokens, logprobs = logits[:, -1], [], []
  for _ in range(new_tokens):
    cache, last, token, logp = step(cache, last)
    tokens.append(token)
    logprobs.append(logp)
  return np.stack(tokens, 1), np.stack(logprobs, 1)


def run_demo(seed: int = 0, new_tokens: int = 16) -> dict:
  config = tiny_gpt2()
  params = init_params(config, jax.random.key(seed))
  print(f"policy: {config.model_type}, {config.num_layers} layers, width {config.embed_dim}, "
        f"vocab {config.vocab_size}, {count_params(params):,} params")
  prompt = jax.random.randint(jax.random.key(seed + 1), (2, 8), 3, config.vocab_size)
  mask = jnp.ones_like(prompt).at[1, :3].set(0)  # second prompt is left-padded
  start = time.perf_counter()
  logits = Transformer(config).apply({"params": params}, prompt, attention_mask=mask)
  print(f"forward: logits {tuple(logits.shape)} {logits.dtype}, "
        f"{time.perf_counter() - start:.2f}s (including compile)")
  start = time.perf_counter()
  tokens, logprobs = _greedy(config, params, prompt, mask, new_tokens)
  print(f"greedy generation: {new_tokens} new tokens per row, "
        f"{time.perf_counter() - start:.2f}s (including compile)")
  for row in range(tokens.shape[0]):
    print(f"  row {row}: {tokens[row].tolist()}  mean log-prob {logprobs[row].mean():.3f}")
  return {"logits_shape": tuple(logits.shape), "tokens": tokens, "logprobs": logprobs}

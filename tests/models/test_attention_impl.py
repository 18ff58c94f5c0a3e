"""`attention_impl="xla"` (jax.nn.dot_product_attention) gives our einsum path's logits and
gradients: grouped heads, padding on either side, a KV cache, a sliding window and packed
segments; the config refuses what the library kernel cannot do (soft-capped scores)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, init_cache, init_params, tiny_gpt2, tiny_llama

CONFIGS = {"gpt2": tiny_gpt2(), "llama_gqa": tiny_llama(),
           "mistral": tiny_llama(model_type="mistral", sliding_window=4),
           "gemma3_like": tiny_llama(model_type="gemma3_text", sliding_window=4,
                                     sliding_layers=(0,), qk_norm=True,
                                     query_pre_attn_scalar=24, post_norms=True)}


def _inputs(config):
  B, T = 3, 12
  tokens = jax.random.randint(jax.random.key(1), (B, T), 3, config.vocab_size)
  mask = jnp.ones((B, T), jnp.int32).at[0, :4].set(0).at[1, 9:].set(0)  # left / right pad
  return tokens, mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_library_attention_matches_ours(name):
  ours = CONFIGS[name]
  lib = ours.replace(attention_impl="xla")
  params = init_params(ours, jax.random.key(0))
  tokens, mask = _inputs(ours)
  real = np.asarray(mask, bool)

  def loss(config, p):
    logits = Transformer(config).apply({"params": p}, tokens, attention_mask=mask)
    return jnp.sum(jnp.where(mask[..., None] > 0, jax.nn.log_softmax(logits), 0.0)), logits

  (a, logits_a), grads_a = jax.value_and_grad(lambda p: loss(ours, p), has_aux=True)(params)
  (b, logits_b), grads_b = jax.value_and_grad(lambda p: loss(lib, p), has_aux=True)(params)
  np.testing.assert_allclose(np.asarray(logits_b)[real], np.asarray(logits_a)[real], atol=1e-5)
  np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
  for x, y in zip(jax.tree_util.tree_leaves(grads_b), jax.tree_util.tree_leaves(grads_a)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=2e-5)


def test_library_attention_with_a_cache_and_with_packed_segments():
  config = tiny_llama(attention_impl="xla")
  params = init_params(config, jax.random.key(0))
  tokens, mask = _inputs(config)
  model, ours = Transformer(config), Transformer(config.replace(attention_impl="einsum"))
  full = ours.apply({"params": params}, tokens, attention_mask=mask)
  cache = init_cache(config, tokens.shape[0], tokens.shape[1])
  logits, cache = model.apply({"params": params}, tokens[:, :7], attention_mask=mask[:, :7],
                              cache=cache)
  steps = [logits]
  step = jax.jit(lambda c, t, m: model.apply({"params": params}, t, attention_mask=m, cache=c))
  for t in range(7, tokens.shape[1]):
    logits, cache = step(cache, tokens[:, t:t + 1], mask[:, t:t + 1])
    steps.append(logits)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1))[real],
                             np.asarray(full)[real], atol=1e-5)

  # two sequences packed in one row: each equals its own unpacked forward
  a, b = tokens[2, :5], tokens[2, 5:]
  packed = tokens[2:3]
  segments = jnp.array([[1] * 5 + [2] * 7])
  positions = jnp.array([list(range(5)) + list(range(7))])
  out = model.apply({"params": params}, packed, positions=positions, segment_ids=segments)
  alone = [ours.apply({"params": params}, x[None]) for x in (a, b)]
  np.testing.assert_allclose(np.asarray(out[0]), np.asarray(jnp.concatenate(alone, 1)[0]),
                             atol=1e-5)


def test_library_attention_refuses_soft_capped_scores():
  with pytest.raises(ValueError, match="attn_logit_softcap"):
    tiny_llama(attention_impl="cudnn", attn_logit_softcap=50.0)
  with pytest.raises(ValueError, match="attention_impl"):
    tiny_llama(attention_impl="flash")

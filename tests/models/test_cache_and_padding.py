"""KV-cache decoding and padding invariance of our transformer (no external reference
needed: both sides are the same model evaluated two ways)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import (PolicyValueModel, RewardModel, Transformer, ValueModel,
                             init_cache, init_params, tiny_gpt2, tiny_llama)

CONFIGS = {"gpt2": tiny_gpt2(), "llama": tiny_llama(),
           "mistral": tiny_llama(model_type="mistral", sliding_window=5)}
# Every Gemma / Qwen3 switch at once: a Gemma 3 (a sliding, then a global layer) with
# Gemma 2's soft caps.
CONFIGS["gemma"] = tiny_llama(
    model_type="gemma3_text", activation="gelu_tanh", tie_embeddings=True,
    sliding_window=5, sliding_layers=(0,), local_rope_theta=50.0, qk_norm=True,
    norm_zero_centred=True, post_norms=True, embed_scale=True, query_pre_attn_scalar=24,
    attn_logit_softcap=1.0, final_logit_softcap=4.0)


def _tokens(seed, shape, vocab):
  return jax.random.randint(jax.random.key(seed), shape, 3, vocab)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefill_then_decode_equals_full_forward(name):
  config = CONFIGS[name]
  params = init_params(config, jax.random.key(0))
  model = Transformer(config)
  B, P, T = 3, 6, 14
  tokens = _tokens(1, (B, T), config.vocab_size)
  mask = jnp.ones((B, T), jnp.int32).at[0, :3].set(0).at[1, :1].set(0)  # left-padded prompts
  full = model.apply({"params": params}, tokens, attention_mask=mask)

  cache = init_cache(config, B, T)
  logits, cache = model.apply({"params": params}, tokens[:, :P], attention_mask=mask[:, :P],
                              cache=cache)
  steps = [logits]
  step_fn = jax.jit(lambda c, t, m: model.apply({"params": params}, t, attention_mask=m,
                                                cache=c))
  for t in range(P, T):
    logits, cache = step_fn(cache, tokens[:, t:t + 1], mask[:, t:t + 1])
    steps.append(logits)
  decoded = jnp.concatenate(steps, axis=1)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(decoded)[real], np.asarray(full)[real], atol=1e-5)
  assert int(cache.index) == T
  np.testing.assert_array_equal(cache.lengths, mask.sum(1))


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral"])  # gemma: tests/models/test_hf_parity
def test_padding_on_either_side_matches_unpadded_rows(name):
  config = CONFIGS[name]
  params = init_params(config, jax.random.key(0))
  apply = lambda t, m: Transformer(config).apply({"params": params}, t, attention_mask=m)
  row = _tokens(2, (1, 7), config.vocab_size)
  alone = apply(row, jnp.ones((1, 7), jnp.int32))[0]
  pad = jnp.zeros((1, 4), jnp.int32)
  left = apply(jnp.concatenate([pad, row], 1),
               jnp.concatenate([pad, jnp.ones((1, 7), jnp.int32)], 1))[0, 4:]
  right = apply(jnp.concatenate([row, pad], 1),
                jnp.concatenate([jnp.ones((1, 7), jnp.int32), pad], 1))[0, :7]
  np.testing.assert_allclose(left, alone, atol=1e-5)
  np.testing.assert_allclose(right, alone, atol=1e-5)
  assert np.isfinite(np.asarray(apply(jnp.concatenate([pad, row], 1),
                                      jnp.concatenate([pad, jnp.ones((1, 7), jnp.int32)], 1)))).all()


def test_bf16_params_give_f32_logits_close_to_f32():
  config = tiny_llama()
  params = init_params(config, jax.random.key(0))
  tokens = _tokens(3, (2, 9), config.vocab_size)
  ref = Transformer(config).apply({"params": params}, tokens)
  bf16 = config.replace(dtype="bfloat16", param_dtype="bfloat16")
  params16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  out = Transformer(bf16).apply({"params": params16}, tokens)
  assert out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out - ref))) < 0.05


def test_reward_model_scores_last_real_token_for_either_padding():
  config = tiny_gpt2()
  model = RewardModel(config)
  row = _tokens(4, (1, 6), config.vocab_size)
  params = model.init(jax.random.key(0), row)["params"]
  assert set(params) == {"backbone", "score"} and "lm_head" not in params["backbone"]
  alone = model.apply({"params": params}, row)
  pad, ones = jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 6), jnp.int32)
  right = model.apply({"params": params}, jnp.concatenate([row, pad], 1),
                      jnp.concatenate([ones, pad], 1))
  left = model.apply({"params": params}, jnp.concatenate([pad, row], 1),
                     jnp.concatenate([pad, ones], 1))
  assert alone.shape == (1,)
  np.testing.assert_allclose(right, alone, atol=1e-5)
  np.testing.assert_allclose(left, alone, atol=1e-5)


def test_value_heads_start_at_zero_and_share_the_policy_backbone():
  config = tiny_llama()
  tokens = _tokens(5, (2, 5), config.vocab_size)
  values = ValueModel(config).init_with_output(jax.random.key(0), tokens)[0]
  np.testing.assert_array_equal(values, np.zeros((2, 5)))
  joint = PolicyValueModel(config)
  params = joint.init(jax.random.key(0), tokens)["params"]
  policy = init_params(config, jax.random.key(1))
  params = {"policy": policy, "value_head": params["value_head"]}  # a policy drops in as is
  logits, values = joint.apply({"params": params}, tokens)
  np.testing.assert_allclose(logits, Transformer(config).apply({"params": policy}, tokens),
                             atol=1e-6)
  assert values.shape == (2, 5)


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral", "gemma"])
def test_blocked_causal_attention_equals_full_attention(name):
  config = CONFIGS[name]
  params = init_params(config, jax.random.key(0))
  tokens = _tokens(6, (3, 96), config.vocab_size)
  mask = jnp.ones((3, 96), jnp.int32).at[0, :10].set(0).at[1, 70:].set(0)  # both paddings
  blocked = Transformer(config.replace(attention_block=32)).apply(
      {"params": params}, tokens, attention_mask=mask)
  full = Transformer(config.replace(attention_block=0)).apply(
      {"params": params}, tokens, attention_mask=mask)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(blocked)[real], np.asarray(full)[real], atol=1e-5)


@pytest.mark.slow  # ~80 s of compiles
def test_remat_keeps_blocked_attention_and_its_gradients():
  config = CONFIGS["llama"].replace(attention_block=32)
  params = init_params(config, jax.random.key(0))
  tokens = _tokens(7, (2, 128), config.vocab_size)
  loss = lambda cfg: jax.grad(lambda p: Transformer(cfg).apply({"params": p}, tokens).mean())
  plain, remat = loss(config)(params), loss(config.replace(remat=True))(params)
  for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_trainer_logprobs_apply_the_final_soft_cap():
  """The trainers' chunked LM head (training.forward) scores as the model's own logits do,
  soft cap included."""
  from jaxalign.training.forward import token_logprobs
  config = CONFIGS["gemma"]
  params = init_params(config, jax.random.key(0))
  params = jax.tree_util.tree_map(lambda x: x * 5, params)  # logits large enough to be capped
  tokens = _tokens(8, (2, 9), config.vocab_size)
  mask = jnp.ones((2, 9), jnp.int32).at[1, :2].set(0)
  logits = jax.jit(Transformer(config).apply)({"params": params}, tokens, attention_mask=mask)
  assert float(jnp.abs(logits).max()) > 2  # the cap (4) bends them
  want = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)[..., 0]
  got = jax.jit(functools.partial(token_logprobs, config, chunk_size=4))(params, tokens, mask)
  np.testing.assert_allclose(got[:, 1:], want, atol=1e-5)

"""A reward model as a reward function: its rewards are the model's scores
(``training.forward.reward_scores``) of prompt + completion, whatever the batch / length
buckets, and each row's score is that of its real tokens alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import rewards as R
from jaxalign.models import RewardModel, tiny_gpt2
from jaxalign.training.forward import reward_scores

V, EOS = 17, 1


@pytest.fixture(scope="module")
def reward_model():
  config = tiny_gpt2(vocab_size=V, eos_token_id=EOS, embed_dim=32, num_layers=1, num_heads=2,
                     num_kv_heads=2, head_dim=16, mlp_dim=64, max_seq_len=64)
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = jax.jit(RewardModel(config).init)(jax.random.key(3), tokens)["params"]
  return config, params  # the head is random too, so scores differ across rows


def _rollout(seed, B=7, P=5, T=6):
  """Left-padded prompts and right-padded completions (up to EOS), as the sampler's."""
  rng = np.random.default_rng(seed)
  prompt_lengths, completion_lengths = rng.integers(1, P + 1, B), rng.integers(1, T + 1, B)
  prompts = rng.integers(3, V, (B, P))
  prompt_mask = (np.arange(P)[None] >= P - prompt_lengths[:, None]).astype(np.int32)
  completions = rng.integers(3, V, (B, T))
  completion_mask = (np.arange(T)[None] < completion_lengths[:, None]).astype(np.int32)
  completions[np.arange(B), completion_lengths - 1] = EOS
  return (np.where(prompt_mask, prompts, 0), prompt_mask, np.where(completion_mask, completions, 0),
          completion_mask)


def test_rewards_are_the_reward_models_scores(reward_model):
  config, params = reward_model
  prompts, prompt_mask, completions, completion_mask = _rollout(0)
  expected = np.asarray(jax.jit(reward_scores, static_argnums=0)(config, params,
                                      np.concatenate([prompts, completions], 1),
                                      np.concatenate([prompt_mask, completion_mask], 1)))
  assert np.std(expected) > 1e-3  # a random head: rows differ
  # Batch buckets (1, 2, 4): 7 rows run as 4 + 3 (filled up to 4), length bucket 16 > 11.
  fn = R.reward_model_reward(config, params, batch_buckets=(1, 2, 4), length_multiple=16)
  got = fn(prompts, completions, prompt_mask=prompt_mask, completion_mask=completion_mask)
  assert got.dtype == np.float32 and got.shape == (7,)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # The same through combine and the trainer's fields (extra fields are ignored).
  out = R.combine({"rm": (2.0, fn)}).evaluate(prompts, completions, prompt_mask=prompt_mask,
                                              completion_mask=completion_mask, eos_id=EOS)
  np.testing.assert_allclose(out.total, 2 * expected, atol=2e-5)


def test_each_score_is_that_of_the_rows_real_tokens_alone(reward_model):
  """Left-padded prompt + completion + right padding scores as the real tokens flush left."""
  config, params = reward_model
  prompts, prompt_mask, completions, completion_mask = _rollout(1, B=4)
  got = R.reward_model_reward(config, params)(prompts, completions, prompt_mask=prompt_mask,
                                              completion_mask=completion_mask)
  flush = np.zeros((4, 11), np.int32)
  flush_mask = np.zeros((4, 11), np.int32)
  for b in range(4):
    real = np.concatenate([prompts[b][prompt_mask[b] > 0],
                           completions[b][completion_mask[b] > 0]])
    flush[b, :len(real)], flush_mask[b, :len(real)] = real, 1
  alone = jax.jit(RewardModel(config).apply)({"params": params}, flush, flush_mask)
  np.testing.assert_allclose(got, np.asarray(alone), atol=1e-5)


def test_too_long_is_a_clear_error(reward_model):
  config, params = reward_model
  ids = np.ones((1, 40), np.int32)
  with pytest.raises(ValueError, match="max_seq_len 64"):
    R.reward_model_reward(config, params)(ids, ids, prompt_mask=ids, completion_mask=ids)

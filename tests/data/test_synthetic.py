"""Synthetic tasks: the language, the gold reward, the Bradley-Terry labeller and the shift
knobs, and the preference data through the file path."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.data import (BOS_ID, EOS_ID, PAD_ID, BatchIterator, RecordSource, SyntheticTask,
                           SyntheticTaskConfig, bradley_terry_labels, bradley_terry_probability,
                           build_dataset, make_gold_reward, token_histogram,
                           tokenize_preferences, write_preferences_jsonl)


@pytest.fixture(scope="module")
def task():
  return SyntheticTask(SyntheticTaskConfig(vocab_size=64, seed=0))


def _mean_log_likelihood(task, prompts, responses):
  """Average per-token log-prob of ``responses`` under the source chain at temperature 1."""
  logits = task.source.transition_logits
  log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                                                                keepdims=True)) \
      - logits.max(1, keepdims=True)
  total, count = 0.0, 0
  for prompt, response in zip(prompts, responses):
    previous = np.concatenate([[prompt[-1]], response[:-1]])
    total += log_probs[previous, response].sum()
    count += len(response)
  return total / count


def _total_variation(a, b, vocab_size):
  return 0.5 * np.abs(token_histogram(a, vocab_size) - token_histogram(b, vocab_size)).sum()


def test_language_reserves_special_ids_and_is_seeded(task):
  prompts = task.sample_prompts(50, seed=1)
  responses = task.sample_responses(prompts, seed=1)
  assert all(p[0] == BOS_ID and (p[1:] >= 3).all() for p in prompts)
  assert all(r[-1] == EOS_ID and (r[:-1] >= 3).all() and len(r) >= 2 for r in responses)
  assert all(len(r) <= task.config.max_response_length for r in responses)
  assert (PAD_ID, EOS_ID, BOS_ID) == (0, 1, 2)
  again = SyntheticTask(SyntheticTaskConfig(vocab_size=64, seed=0))
  assert all(np.array_equal(a, b) for a, b in zip(prompts, again.sample_prompts(50, seed=1)))
  other = task.sample_prompts(50, seed=2)
  assert not all(np.array_equal(a, b) for a, b in zip(prompts, other))


def test_sft_and_prompt_data_fit_a_tiny_model(task):
  from jaxalign.models import Transformer, init_params, tiny_gpt2
  sft = task.sft_rows(16, seed=0)
  batch = next(BatchIterator(sft, 8, seed=0))
  assert batch.tokens.max() < 64 and not batch.truncated.any()
  assert (batch.loss_mask.sum(axis=1) >= 2).all()  # a content token and EOS
  prompts = next(BatchIterator(task.prompt_rows(16, seed=0), 8, seed=0))
  assert (prompts.tokens[prompts.attention_mask == 0] == PAD_ID).all()
  config = tiny_gpt2(**task.model_overrides())
  assert config.vocab_size == 64 and config.eos_token_id == EOS_ID
  params = init_params(config, jax.random.key(0))
  logits = Transformer(config).apply({"params": params}, batch.tokens,
                                     attention_mask=batch.attention_mask)
  assert logits.shape == batch.tokens.shape + (64,) and bool(jnp.isfinite(logits).all())


def test_gold_reward_is_a_deterministic_linear_score_of_counts():
  reward = make_gold_reward(16, seed=3, overlap_weight=0.0, length_weight=0.0)
  assert reward.token_weights[:3].tolist() == [0.0, 0.0, 0.0]
  w = np.asarray(reward.token_weights)
  prompt = jnp.array([[2, 5, 6]])
  response = jnp.array([[7, 7, 9, 1, 0]])
  mask = jnp.array([[1, 1, 1, 1, 0]])
  value = jax.jit(reward.__call__)(prompt, response, mask)
  np.testing.assert_allclose(value, [2 * w[7] + w[9]], rtol=1e-6)
  # One more token 9 moves the reward by exactly w[9].
  more = reward(prompt, jnp.array([[7, 7, 9, 9, 1]]), jnp.ones((1, 5)))
  np.testing.assert_allclose(more - value, [w[9]], rtol=1e-5, atol=1e-6)
  assert make_gold_reward(16, seed=3).token_weights.tolist() == reward.token_weights.tolist()


def test_gold_reward_overlap_length_terms_and_padding_invariance():
  reward = make_gold_reward(16, seed=0, overlap_weight=2.0, length_weight=1.0,
                            target_length=2.0)
  w = np.asarray(reward.token_weights)
  prompt = jnp.array([[0, 0, 2, 5, 6]])  # left-padded
  response = jnp.array([[5, 9, 9, 1, 0, 0]])
  mask = jnp.array([[1, 1, 1, 1, 0, 0]])
  expected = w[5] + 2 * w[9] + 2.0 * (1 / 3) - 1.0 * abs(3 - 2) / 2
  np.testing.assert_allclose(reward(prompt, response, mask), [expected], rtol=1e-5)
  right_padded = reward(jnp.array([[2, 5, 6, 0]]), jnp.array([[5, 9, 9, 1]]), jnp.ones((1, 4)))
  np.testing.assert_allclose(right_padded, [expected], rtol=1e-5)


def test_bradley_terry_noise_extremes():
  rewards_a = jnp.array([1.0, -1.0, 0.3, 2.0])
  rewards_b = jnp.array([0.0, 0.0, 0.3, 2.5])
  np.testing.assert_allclose(bradley_terry_probability(rewards_a, rewards_b, math.inf),
                             [1.0, 0.0, 0.5, 0.0])
  np.testing.assert_allclose(bradley_terry_probability(rewards_a, rewards_b, 1.0),
                             jax.nn.sigmoid(rewards_a - rewards_b), rtol=1e-6)
  for seed in range(5):
    pick = jnp.array([0, 1, 3])
    labels = bradley_terry_labels(jax.random.key(seed), rewards_a[pick], rewards_b[pick],
                                  math.inf)
    assert labels.tolist() == [True, False, False]
  many_a, many_b = jnp.linspace(-3, 3, 4000), jnp.zeros(4000)
  coin = bradley_terry_labels(jax.random.key(0), many_a, many_b, 0.0)
  assert 0.46 < float(coin.mean()) < 0.54
  sharp = bradley_terry_labels(jax.random.key(0), many_a, many_b, 1.0)
  agree = float((sharp == (many_a > 0)).mean())
  assert 0.7 < agree < 0.95  # noisy, but better than chance


def test_preference_pairs_follow_the_gold_reward(task):
  pairs = task.preference_pairs(64, seed=0, beta=math.inf)
  assert (pairs.chosen_rewards >= pairs.rejected_rewards).all()
  assert pairs.report.num_rows == 64 and pairs.report.num_kept == len(pairs.rows)
  batch = pairs.batch()
  assert batch.chosen_tokens.shape == (len(pairs.rows), task.config.max_length)
  recomputed = task.gold_reward(jnp.asarray(batch.chosen_tokens),
                                jnp.asarray(batch.chosen_tokens),
                                jnp.asarray(batch.chosen_loss_mask),
                                prompt_mask=jnp.asarray(batch.chosen_attention_mask
                                                        - batch.chosen_loss_mask))
  np.testing.assert_allclose(recomputed, pairs.chosen_rewards, rtol=1e-5, atol=1e-5)
  noisy = task.preference_pairs(64, seed=0, beta=0.0)
  assert not (noisy.chosen_rewards >= noisy.rejected_rewards).all()


def test_prompt_shift_moves_prompts_to_the_shifted_region(task):
  base = task.sample_prompts(200, seed=0)
  shifted = task.sample_prompts(200, seed=0, prompt_shift=4.0)
  region = task.shifted_region
  share = lambda prompts: token_histogram(prompts, 64)[region].sum()
  assert share(shifted) > share(base) + 0.3
  assert _total_variation(base, shifted, 64) > 0.3


def test_response_shift_and_temperature_change_the_response_distribution(task):
  prompts = task.sample_prompts(200, seed=0)
  base = task.sample_responses(prompts, seed=0)
  same_policy = task.sample_responses(prompts, seed=5)
  shifted = task.sample_responses(prompts, seed=0, response_shift=1.0)
  hot = task.sample_responses(prompts, seed=0, temperature=3.0)
  noise = _total_variation(base, same_policy, 64)
  assert _total_variation(base, shifted, 64) > noise + 0.1
  base_likelihood = _mean_log_likelihood(task, prompts, base)
  assert abs(_mean_log_likelihood(task, prompts, same_policy) - base_likelihood) < 0.1
  assert _mean_log_likelihood(task, prompts, shifted) < base_likelihood - 0.5
  # A hotter source is less likely under the source itself.
  assert _mean_log_likelihood(task, prompts, hot) < base_likelihood - 0.5


def test_preference_jsonl_through_tfds_gives_the_same_batches(task, tmp_path):
  pairs = task.preference_pairs(32, seed=4)
  path = str(tmp_path / "synthetic.jsonl")
  write_preferences_jsonl(path, pairs, task.tokenizer)
  builder, _ = build_dataset("synthetic", "preference", {"train": path}, str(tmp_path / "tfds"))
  records = RecordSource(builder.as_data_source("train"), "preference")
  rows, report = tokenize_preferences(records, task.tokenizer, task.config.max_length)
  assert report.num_kept == len(pairs.rows) and not report.skipped and not report.flagged
  direct, from_file = pairs.batch(), rows.batch(np.arange(len(rows)), task.config.max_length)
  for field in ("chosen_tokens", "chosen_loss_mask", "rejected_tokens",
                "rejected_attention_mask"):
    np.testing.assert_array_equal(getattr(from_file, field), getattr(direct, field))
  np.testing.assert_allclose(from_file.scores, pairs.chosen_rewards - pairs.rejected_rewards,
                             rtol=1e-5, atol=1e-5)


def test_sft_and_prompt_jsonl_read_back_as_the_same_ids(task, tmp_path):
  from jaxalign.data import (read_records, tokenize_prompts, tokenize_sft, write_prompts_jsonl,
                             write_sft_jsonl)
  sft = task.sft_rows(20, seed=3)
  write_sft_jsonl(str(tmp_path / "sft.jsonl"), sft, task.tokenizer)
  records, _ = read_records(str(tmp_path / "sft.jsonl"), "sft")
  rows, report = tokenize_sft(records, task.tokenizer, task.config.max_length)
  assert report.num_kept == 20 and not report.flagged
  assert all(np.array_equal(a, b) for a, b in zip(rows.prompts, sft.prompts))
  assert all(np.array_equal(a, b) for a, b in zip(rows.responses, sft.responses))
  prompts = task.prompt_rows(20, seed=3, prompt_shift=2.0)
  write_prompts_jsonl(str(tmp_path / "prompts.jsonl"), prompts, task.tokenizer)
  records, _ = read_records(str(tmp_path / "prompts.jsonl"), "prompt")
  rows, _ = tokenize_prompts(records, task.tokenizer, prompts.max_length)
  assert all(np.array_equal(a, b) for a, b in zip(rows.prompts, prompts.prompts))

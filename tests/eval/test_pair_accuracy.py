"""Pairwise accuracy of an explicit and an implicit reward equals a hand count: each
sequence scored alone (unpadded), chosen > rejected counted by hand, weighted by the rows'
weights; a tie counts as wrong."""

import jax
import numpy as np
import pytest

from jaxalign import data as D
from jaxalign.eval import implicit_reward_accuracy, reward_model_accuracy
from jaxalign.models import init_params, tiny_gpt2
from jaxalign.training.forward import reward_scores
from jaxalign.training.runs import reward_model_params
from tests.training.numpy_logps import numpy_token_logps

CONFIG = tiny_gpt2(vocab_size=32, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=2,
                   head_dim=16, mlp_dim=64, eos_token_id=1)
N = 21  # not a multiple of the batch size: the last batch is padded


def _rows(weights=None, seed=0):
  rng = np.random.default_rng(seed)
  ids = lambda low, high: list(rng.integers(3, 32, rng.integers(low, high))) + [1]
  prompts = [ids(2, 6)[:-1] for _ in range(N)]
  return D.PreferenceRows.from_token_lists(prompts, [ids(1, 9) for _ in range(N)],
                                           [ids(1, 9) for _ in range(N)], pad_id=0, eos_id=1,
                                           max_length=24, weights=weights)


def _sequence(prompt, response):
  return np.asarray([list(prompt) + list(response)], np.int32)


def _response_logp(params, prompt, response):
  tokens = _sequence(prompt, response)
  logps = numpy_token_logps(CONFIG, params, tokens, np.ones_like(tokens))
  return logps[0, len(prompt):].sum()


def _hand_accuracy(rows, reward):
  wins = np.array([reward(p, c) > reward(p, r)
                   for p, c, r in zip(rows.prompts, rows.chosen, rows.rejected)], np.float64)
  return float((wins * rows.weights).sum() / rows.weights.sum())


@pytest.mark.slow  # a compile per sequence length: ~1 min
def test_reward_model_accuracy_is_the_hand_count():
  params = reward_model_params(CONFIG, init_params(CONFIG, jax.random.key(0)), seed=3)
  score = lambda prompt, response: float(reward_scores(
      CONFIG, params, _sequence(prompt, response),
      np.ones((1, len(prompt) + len(response)), np.int32))[0])
  for weights in (None, np.random.default_rng(1).uniform(0.2, 2.0, N)):
    rows = _rows(weights)
    with jax.disable_jit():  # one sequence at a time: op by op, not a compile per length
      expected = _hand_accuracy(rows, score)
    assert 0.0 < expected < 1.0  # the count is not trivial
    np.testing.assert_allclose(reward_model_accuracy(CONFIG, params, rows, batch_size=8),
                               expected, atol=1e-6)


@pytest.mark.slow  # per-length compiles of every sequence alone: make test-all
def test_implicit_reward_accuracy_is_the_hand_count_for_any_beta():
  policy, ref = init_params(CONFIG, jax.random.key(1)), init_params(CONFIG, jax.random.key(2))
  rows = _rows()
  implicit = lambda prompt, response: (_response_logp(policy, prompt, response)
                                       - _response_logp(ref, prompt, response))
  expected = _hand_accuracy(rows, implicit)
  assert 0.0 < expected < 1.0
  for beta in (0.05, 2.0):
    np.testing.assert_allclose(
        implicit_reward_accuracy(CONFIG, policy, ref, rows, beta=beta, batch_size=8),
        expected, atol=1e-6)


def test_a_policy_equal_to_its_reference_ties_every_pair():
  policy = init_params(CONFIG, jax.random.key(1))
  assert implicit_reward_accuracy(CONFIG, policy, policy, _rows()) == 0.0

"""pass@k: the unbiased estimator against exact enumeration and a Monte Carlo estimate
(Chen et al. 2021); greedy pass@1 and sampled pass@k of a model whose answers are known (a
fake model whose next token depends only on the last one: tests/sampling/fake_model.py)."""

import itertools
import math

import jax
import numpy as np
import pytest

from jaxalign import rewards as R
from jaxalign.data import AnswerPromptRows
from jaxalign.data.verifiable_task import EQUALS_ID, REV_ID
from tests.sampling.fake_model import fake_model

V, BOS, EOS, PAD = 17, 2, 1, 0
SEVEN, EIGHT = 10, 11  # digit ids


def _table(p_seven: float):
  """After ``=``: 7 with probability p, else 8; after a digit: EOS; anything else: EOS."""
  table = np.full((V, V), -1e9, np.float32)
  table[:, EOS] = 0.0
  table[EQUALS_ID] = -1e9
  table[EQUALS_ID, SEVEN] = np.log(p_seven) if p_seven > 0 else -1e9
  table[EQUALS_ID, EIGHT] = np.log1p(-p_seven) if p_seven < 1 else -1e9
  return table


def _rows(answers):
  """``<bos> rev 7 =`` prompts with the given answers."""
  prompts = [[BOS, REV_ID, SEVEN, EQUALS_ID]] * len(answers)
  return AnswerPromptRows.from_answers(prompts, answers, PAD, answer_length=2)


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (5, 2), (6, 3), (8, 8), (10, 4)])
def test_estimator_is_the_exact_share_of_k_subsets_with_a_correct_sample(n, k):
  """1 - C(n - c, k) / C(n, k) equals the share of all k-subsets of n samples (c correct)
  holding a correct one."""
  counts = np.arange(n + 1)
  got = R.pass_at_k_estimate(n, counts, k)
  for c in counts:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert got[c] == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)
  assert got[0] == 0.0 and got[-1] == 1.0


def test_estimator_matches_monte_carlo_and_the_k_equals_n_case():
  rng = np.random.default_rng(0)
  n, k, c = 12, 3, 2
  draws = np.array([rng.permutation(n)[:k] for _ in range(20_000)])  # k of n, no replacement
  monte_carlo = np.mean((draws < c).any(axis=1))  # samples 0..c-1 are the correct ones
  exact = 1 - math.comb(n - c, k) / math.comb(n, k)
  assert R.pass_at_k_estimate(n, [c], k)[0] == pytest.approx(exact, abs=1e-12)
  assert monte_carlo == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000))
  # k = n: any correct sample; k = 1: c / n.
  np.testing.assert_array_equal(R.pass_at_k_estimate(4, [0, 1, 4], 4), [0, 1, 1])
  np.testing.assert_allclose(R.pass_at_k_estimate(4, [0, 1, 3], 1), [0, 0.25, 0.75])
  for n, c, k in [(3, 1, 4), (3, 4, 1), (3, -1, 1)]:  # k > n, c > n, c < 0
    with pytest.raises(ValueError):
      R.pass_at_k_estimate(n, [c], k)


def test_greedy_pass_at_1_on_a_model_whose_answer_is_known():
  """Greedy says ``7 <eos>``: right for the answer 7 only (7 7, 8 and 7 8 are wrong). Seven
  rows in batches of 3: the last batch is filled up and its extra rows dropped. (Every test
  here samples [3 prompts, 3 tokens] greedily or [1 prompt x 8, 3 tokens]: two compiles.)"""
  config, params = fake_model(_table(0.9), max_seq_len=16)
  answers = [[SEVEN], [EIGHT], [SEVEN, SEVEN], [SEVEN], [SEVEN, EIGHT], [SEVEN], [EIGHT]]
  got = R.greedy_pass_at_1(config, params, _rows(answers), max_new_tokens=3, eos_id=EOS,
                           batch_size=3)
  assert got == pytest.approx(3 / 7)
  correct = R.completion_correct(config, params, _rows(answers), jax.random.key(0),
                                 num_samples=1,
                                 temperature=0.0, max_new_tokens=3, eos_id=EOS, batch_size=3)
  np.testing.assert_array_equal(correct[:, 0], [1, 0, 0, 1, 0, 1, 0])


def test_sampled_pass_at_k_has_the_expected_value_1_minus_q_to_the_k():
  """Each sample is right with probability p = 0.3, independently; the estimator is unbiased,
  so its mean over N prompts is 1 - (1 - p)^k within 4 of its exact standard errors."""
  p, n, k, N = 0.3, 8, 4, 64
  config, params = fake_model(_table(p), max_seq_len=16)
  out = R.pass_at_k(config, params, _rows([[SEVEN]] * N), jax.random.key(0), k=k,
                    num_samples=n, max_new_tokens=3, eos_id=EOS, batch_size=8)
  # Exact mean and variance of the estimator under c ~ Binomial(n, p).
  c = np.arange(n + 1)
  weights = np.array([math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in c])
  values = R.pass_at_k_estimate(n, c, k)
  mean = float(weights @ values)
  std = math.sqrt(float(weights @ (values - mean) ** 2) / N)
  assert mean == pytest.approx(1 - (1 - p) ** k, abs=1e-12)
  assert abs(out[f"pass@{k}"] - mean) < 4 * std
  assert abs(out["mean_correct"] - p) < 4 * math.sqrt(p * (1 - p) / (N * n))
  with pytest.raises(ValueError, match="temperature"):
    R.pass_at_k(config, params, _rows([[SEVEN]]), jax.random.key(0), k=2, temperature=0.0,
                max_new_tokens=3, eos_id=EOS)


def test_evaluate_pass_reports_greedy_pass_at_1_and_pass_at_k():
  config, params = fake_model(_table(1.0), max_seq_len=16)
  rows = _rows([[SEVEN], [EIGHT], [SEVEN]])
  out = R.evaluate_pass(config, params, rows, jax.random.key(1), k=8, max_new_tokens=3,
                        eos_id=EOS, batch_size=3)
  assert out == {"pass@1": pytest.approx(2 / 3), "pass@8": pytest.approx(2 / 3),
                 "mean_correct": pytest.approx(2 / 3)}

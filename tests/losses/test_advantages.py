"""GAE against a plain reverse loop; RLOO, GRPO and KL-penalised rewards against hand values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import (gae_advantages, grpo_advantages, kl_penalized_rewards,
                             rloo_advantages, whiten_advantages)


def test_gae_hand_value():
  # gamma 1, lam 0.5; deltas: 0 + 0.6 - 0.5 = 0.1, 0 + 0.7 - 0.6 = 0.1, 1 + 0 - 0.7 = 0.3
  # A_2 = 0.3, A_1 = 0.1 + 0.5 * 0.3 = 0.25, A_0 = 0.1 + 0.5 * 0.25 = 0.225; R = A + V
  advantages, returns = gae_advantages(jnp.array([[0.0, 0.0, 1.0]]), jnp.array([[0.5, 0.6, 0.7]]),
                                       jnp.ones((1, 3)), gamma=1.0, lam=0.5)
  np.testing.assert_allclose(advantages, [[0.225, 0.25, 0.3]], rtol=1e-6)
  np.testing.assert_allclose(returns, [[0.725, 0.85, 1.0]], rtol=1e-6)


def _gae_loop(rewards, values, mask, gamma, lam):
  """The reference: per row, a reverse loop over the response tokens only."""
  advantages = np.zeros_like(rewards)
  for row in range(rewards.shape[0]):
    positions = np.flatnonzero(mask[row])
    last_advantage, next_value = 0.0, 0.0
    for t in positions[::-1]:
      delta = rewards[row, t] + gamma * next_value - values[row, t]
      last_advantage = delta + gamma * lam * last_advantage
      advantages[row, t], next_value = last_advantage, values[row, t]
  return advantages, (advantages + values) * mask


def test_gae_matches_python_loop_on_random_padded_rows():
  B, T = 5, 9
  rng = np.random.default_rng(0)
  rewards, values = rng.normal(size=(B, T)), rng.normal(size=(B, T))
  starts, lengths = rng.integers(0, 4, B), rng.integers(1, 6, B)  # prompt, then response, pad
  mask = np.array([[s <= t < s + n for t in range(T)] for s, n in zip(starts, lengths)], float)
  got_advantages, got_returns = jax.jit(gae_advantages, static_argnums=(3, 4))(
      rewards, values, mask, 0.99, 0.9)
  advantages, returns = _gae_loop(rewards, values, mask, 0.99, 0.9)
  np.testing.assert_allclose(got_advantages, advantages, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_returns, returns, rtol=1e-5, atol=1e-5)


def test_whiten_advantages_ignores_padding():
  advantages = jnp.array([[1.0, 2.0, 3.0, 1e6]])
  whitened = whiten_advantages(advantages, jnp.array([[1, 1, 1, 0]]))
  np.testing.assert_allclose(whitened, [[-1.0, 0.0, 1.0, 0.0]], atol=1e-6)  # unbiased var 1


def test_rloo():
  # group [1, 2, 3]: baselines (2 + 3)/2, (1 + 3)/2, (1 + 2)/2 -> [-1.5, 0, 1.5]
  # group [4, 0, 0]: baselines 0, 2, 2 -> [4, -2, -2]
  np.testing.assert_allclose(rloo_advantages(jnp.array([1.0, 2, 3, 4, 0, 0]), 3),
                             [-1.5, 0, 1.5, 4, -2, -2], rtol=1e-6)
  with pytest.raises(ValueError):
    rloo_advantages(jnp.ones(5), 2)


def test_grpo():
  rewards = jnp.array([1.0, 2, 3, 4, 0, 0])
  # group 1: mean 2, unbiased std 1 -> [-1, 0, 1] / (1 + 1e-4)
  # group 2: mean 4/3, deviations [8/3, -4/3, -4/3], unbiased var (64 + 16 + 16)/9/2 = 16/3,
  #          std 4/sqrt(3) = 2.3094011 -> 8/3 / 2.3095011 = 1.1546505, -4/3 / 2.3095011 = -0.5773253
  expected = [-0.9999000099990001, 0.0, 0.9999000099990001,
              1.154650540544221, -0.5773252702721104, -0.5773252702721104]
  np.testing.assert_allclose(grpo_advantages(rewards, 3), expected, rtol=1e-5)
  np.testing.assert_allclose(grpo_advantages(rewards, 3, scale=False),
                             [-1, 0, 1, 8 / 3, -4 / 3, -4 / 3], rtol=1e-6)


def test_kl_penalized_rewards():
  logps = jnp.array([[0.0, -1.0, -2.0, 0.0]])
  ref_logps = jnp.array([[0.0, -1.5, -1.5, 0.0]])
  mask = jnp.array([[0, 1, 1, 0]])
  # k1 = [., 0.5, -0.5, .]; -0.1 * k1 = [0, -0.05, 0.05, 0]; score 2 at the last real token (2)
  rewards, metrics = kl_penalized_rewards(logps, ref_logps, mask, jnp.array([2.0]), 0.1)
  np.testing.assert_allclose(rewards, [[0.0, -0.05, 2.05, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(metrics["objective/kl"], 0.0, atol=1e-7)
  np.testing.assert_allclose(metrics["objective/rlhf_reward"], 2.0, rtol=1e-6)
  # no EOS: the score drops by the penalty 1 -> 1.05 at the last token
  rewards, _ = kl_penalized_rewards(logps, ref_logps, mask, jnp.array([2.0]), 0.1,
                                    missing_eos_penalty=1.0, has_eos=jnp.array([False]))
  np.testing.assert_allclose(rewards[0, 2], 1.05, rtol=1e-6)
  # k3: e^-0.5 - 1 + 0.5 = 0.1065306597 and e^0.5 - 1 - 0.5 = 0.1487212707, times -0.1
  rewards, metrics = kl_penalized_rewards(logps, ref_logps, mask, jnp.array([2.0]), 0.1,
                                          estimator="k3")
  np.testing.assert_allclose(rewards[0, 1:3], [-0.01065306597, 2 - 0.01487212707], rtol=1e-6)
  np.testing.assert_allclose(metrics["objective/kl"], 0.1065306597 + 0.1487212707, rtol=1e-6)
  assert math.isfinite(float(metrics["objective/non_score_reward"]))

"""GRPO's ``scale`` modes, RLOO's batch normalisation and REINFORCE++ (plain and baseline)
against hand values and a plain loop. TRL parity: test_trl_grpo_parity.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import grpo_advantages, reinforce_pp_advantages, rloo_advantages
from jaxalign.ops import kl_k1

REWARDS = jnp.array([1.0, 2, 3, 4, 0, 0])


def test_grpo_scale_modes():
  # group means 2 and 4/3; deviations [-1, 0, 1] and [8/3, -4/3, -4/3]
  centred = np.array([-1, 0, 1, 8 / 3, -4 / 3, -4 / 3])
  batch_std = np.std([1, 2, 3, 4, 0, 0], ddof=1)  # unbiased over all six: 1.5055453
  np.testing.assert_allclose(grpo_advantages(REWARDS, 3, scale="batch"),
                             centred / (batch_std + 1e-4), rtol=1e-6)
  np.testing.assert_allclose(grpo_advantages(REWARDS, 3, scale="none"), centred, rtol=1e-6)
  np.testing.assert_allclose(grpo_advantages(REWARDS, 3, scale="group"),
                             grpo_advantages(REWARDS, 3, scale=True))
  np.testing.assert_allclose(grpo_advantages(REWARDS, 3, scale=False), centred, rtol=1e-6)
  with pytest.raises(ValueError, match="scale"):
    grpo_advantages(REWARDS, 3, scale="global")


def test_rloo_batch_normalisation():
  plain = np.array([-1.5, 0, 1.5, 4, -2, -2])  # test_advantages.test_rloo
  expected = (plain - plain.mean()) / (np.std(plain, ddof=1) + 1e-4)
  np.testing.assert_allclose(rloo_advantages(REWARDS, 3, normalize=True), expected, rtol=1e-6)


def test_reinforce_pp_hand_value():
  # row 0: prompt, 2 response tokens; row 1: prompt, 1 response token, padding
  mask = jnp.array([[0, 1, 1], [0, 1, 0]])
  advantages = reinforce_pp_advantages(jnp.array([1.0, 0.0]), mask)
  # gamma 1: the return is the score on every response token: [1, 1] and [0];
  # batch mean 2/3, biased variance (2 (1/3)^2 + (2/3)^2) / 3 = 2/9
  std = math.sqrt(2 / 9)
  np.testing.assert_allclose(advantages, [[0, (1 / 3) / std, (1 / 3) / std],
                                          [0, -(2 / 3) / std, 0]], rtol=1e-6)
  # mean 0, biased variance 1 over the response tokens
  values = np.asarray(advantages)[np.asarray(mask) == 1]
  np.testing.assert_allclose([values.mean(), values.var()], [0, 1], atol=1e-6)


def _reinforce_pp_loop(scores, token_rewards, mask, gamma, group_size=None):
  """The reference: scores (minus the group mean), a reverse loop per row, batch whitening."""
  scores = np.array(scores, np.float64)
  if group_size is not None:
    grouped = scores.reshape(-1, group_size)
    scores = (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
  returns = np.zeros_like(mask, np.float64)
  for row in range(mask.shape[0]):
    positions = np.flatnonzero(mask[row])
    running = 0.0
    for i, t in enumerate(positions[::-1]):
      reward = token_rewards[row, t] + (scores[row] if i == 0 else 0.0)
      running = reward + gamma * running
      returns[row, t] = running
  values = returns[mask == 1]
  advantages = (returns - values.mean()) / values.std()
  return advantages * mask


@pytest.mark.parametrize("group_size", [None, 2])
def test_reinforce_pp_matches_a_loop_with_kl_rewards(group_size):
  B, T = 6, 8
  rng = np.random.default_rng(0)
  starts, lengths = rng.integers(0, 3, B), rng.integers(1, 6, B)
  mask = np.array([[s <= t < s + n for t in range(T)] for s, n in zip(starts, lengths)], np.int32)
  logps, ref_logps = -np.abs(rng.normal(size=(B, T))), -np.abs(rng.normal(size=(B, T)))
  token_rewards = -0.05 * np.asarray(kl_k1(logps, ref_logps)) * mask  # KL in the reward
  scores = rng.normal(size=B)
  got = jax.jit(reinforce_pp_advantages, static_argnames=("group_size", "gamma"))(
      scores, mask, token_rewards=token_rewards, group_size=group_size, gamma=0.9)
  expected = _reinforce_pp_loop(scores, token_rewards, mask, 0.9, group_size)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_reinforce_pp_baseline_ignores_a_prompt_offset():
  # REINFORCE++-baseline: adding a constant to one prompt's scores changes nothing
  mask = jnp.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
  scores = jnp.array([1.0, 0.0, 0.3, 0.9])
  shifted = scores + jnp.array([5.0, 5.0, 0.0, 0.0])
  np.testing.assert_allclose(reinforce_pp_advantages(shifted, mask, group_size=2),
                             reinforce_pp_advantages(scores, mask, group_size=2), atol=1e-5)
  # without the group baseline it does change: the baseline is global
  assert not np.allclose(reinforce_pp_advantages(shifted, mask),
                         reinforce_pp_advantages(scores, mask), atol=1e-3)

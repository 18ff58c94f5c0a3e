"""The linear contextual bandit of Li, Xu, Yu 2023 (arXiv 2312.10584, Sec. 5.1), as in their
code (liziniu/policy_optimization, envs/linear_bandit.py, scripts/run_linear_bandit.sh).

State s ~ U(0, 1), 4 actions, reward features and true parameter

  phi(s, a) = [(a + 1) cos(pi s), sin(pi s) / (a + 1)],   r*(s, a) = theta* . phi(s, a),
  theta* = [1, 2];

the policy is log-linear in the "flipped" features psi(s, a) = [(a + 1) sin(pi s),
cos(pi s) / (a + 1)], so it cannot represent the optimal policy exactly and where it is
trained matters. The reward model is linear in the true features (well specified).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_ACTIONS = 4
THETA_STAR = jnp.array([1.0, 2.0])


def reward_features(states):
  """``phi(s, a)``: ``[S] -> [S, A, 2]``."""
  a = jnp.arange(NUM_ACTIONS) + 1.0  # [A]
  s = jnp.pi * states[:, None]  # [S, 1]
  return jnp.stack([a * jnp.cos(s), jnp.sin(s) / a], axis=-1)


def policy_features(states):
  """``psi(s, a)`` (cos and sin swapped): ``[S] -> [S, A, 2]``."""
  a = jnp.arange(NUM_ACTIONS) + 1.0
  s = jnp.pi * states[:, None]
  return jnp.stack([a * jnp.sin(s), jnp.cos(s) / a], axis=-1)


def true_rewards(states):
  """``r*(s, a)``: ``[S, A]``."""
  return reward_features(states) @ THETA_STAR


def sample_states(key, num: int):
  return jax.random.uniform(key, (num,))


def init_policy(key):
  """``theta ~ U(0, 1)^2``, as the reference code."""
  return jax.random.uniform(key, (2,))


def policy_logps(theta, states):
  """``log pi_theta(a | s)``: ``[S, A]``."""
  return jax.nn.log_softmax(policy_features(states) @ theta)


def init_reward_model(key):
  del key
  return jnp.zeros(2)  # the logistic MLE is convex: the start only matters for the budget


def reward_model_scores(params, states):
  """``r_hat(s, a) = params . phi(s, a)``: ``[S, A]``."""
  return reward_features(states) @ params

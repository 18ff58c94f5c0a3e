"""Li, Xu, Yu 2023: with a reward model and more prompts, the policy beats DPO."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _linear_bandit, _neural_bandit
from experiments import out_of_preference as experiment


def test_linear_bandit_features_and_optimum():
  states = jnp.array([0.0, 0.5, 1.0])
  # r*(s, a) = (a + 1) cos(pi s) + 2 sin(pi s) / (a + 1)
  expected = [[1, 2, 3, 4], [2, 1, 2 / 3, 0.5], [-1, -2, -3, -4]]
  np.testing.assert_allclose(_linear_bandit.true_rewards(states), expected, atol=1e-6)
  psi = _linear_bandit.policy_features(states)  # [(a + 1) sin(pi s), cos(pi s) / (a + 1)]
  np.testing.assert_allclose(psi[1, 3], [4.0, 0.0], atol=1e-6)


def test_neural_bandit_best_action_does_not_depend_on_the_state():
  bandit = experiment.make_bandit("neural", jax.random.key(0))
  rewards = jax.jit(bandit.true_rewards)(_neural_bandit.sample_states(jax.random.key(1), 256))
  assert rewards.shape == (256, 10)
  assert (rewards.argmax(-1) == rewards[0].argmax()).all()


def test_preference_labels_follow_bradley_terry():
  bandit = experiment.make_bandit("linear", None)
  states, chosen, rejected = experiment.preference_pairs(bandit, jax.random.key(0), 20_000)
  assert (chosen != rejected).all()
  rewards = bandit.true_rewards(states)
  rows = jnp.arange(states.shape[0])
  # P(chosen is the better action) = E sigmoid(|r1 - r2|)
  better = rewards[rows, chosen] > rewards[rows, rejected]
  expected = jax.nn.sigmoid(jnp.abs(rewards[rows, chosen] - rewards[rows, rejected])).mean()
  np.testing.assert_allclose(better.mean(), expected, atol=0.01)


def test_reduced_run(tmp_path):
  numbers = experiment.run(dataclasses.replace(experiment.QUICK, output_dir=str(tmp_path)))
  gaps = {m: g["mean"] for m, g in numbers["settings"]["neural, reference-code budget"]
          ["gaps"].items()}
  plus = gaps["RMB-PO+ (1:2)"]
  assert gaps["DPO"] > plus + 0.05, gaps  # the paper's ordering
  assert gaps["DPO"] < gaps["uniform"] - 0.05, gaps  # DPO does learn
  # with its extra steps, RMB-PO+ reaches the reward model's greedy policy
  np.testing.assert_allclose(plus, gaps["greedy on reward model"], atol=0.02)

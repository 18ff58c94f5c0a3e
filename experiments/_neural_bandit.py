"""The neural contextual bandit of Li, Xu, Yu 2023 (arXiv 2312.10584, Sec. 5.2), as in their
code (liziniu/policy_optimization, envs/neural_bandit.py, algos/neural_bandit/*.py).

States are 50-dimensional, U[-1, 1]; 10 actions. The true reward is a random "two-tower"
network: ``h_s = tanh(W_s s + b_s)``, ``h_a = tanh(W_a onehot(a) + b_a)`` (64 units each),
``u = w . [h_s, h_a] + b`` and ``r* = u + sign(u)``. The learned reward model has the same
towers with two 64-unit ReLU layers each; the policy is an MLP 50 -> 64 -> 64 -> 10 (ReLU,
softmax). Every layer starts as PyTorch's default ``nn.Linear``: weights and biases
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

Note: ``u`` is a sum of a state term and an action term and ``u + sign(u)`` is increasing in
``u``, so the best action is the same in every state; the reward gaps between actions do
depend on the state (through the sign jump).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments._common import mlp

STATE_DIM = 50
NUM_ACTIONS = 10
HIDDEN = 64


def init_torch_mlp(key, sizes: list[int]):
  """Dense layers with PyTorch's default init (uniform +-1/sqrt(fan_in), weights and biases)."""
  params = []
  for k, fan_in, fan_out in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
    wk, bk = jax.random.split(k)
    bound = 1.0 / jnp.sqrt(fan_in)
    params.append((jax.random.uniform(wk, (fan_in, fan_out), minval=-bound, maxval=bound),
                   jax.random.uniform(bk, (fan_out,), minval=-bound, maxval=bound)))
  return params


def init_towers(key, num_layers: int):
  """``{"state", "action", "head"}`` for a two-tower reward with ``num_layers`` per tower."""
  state_key, action_key, head_key = jax.random.split(key, 3)
  return {"state": init_torch_mlp(state_key, [STATE_DIM] + [HIDDEN] * num_layers),
          "action": init_torch_mlp(action_key, [NUM_ACTIONS] + [HIDDEN] * num_layers),
          "head": init_torch_mlp(head_key, [2 * HIDDEN, 1])}


def _tower(params, x, activation):
  for weight, bias in params:
    x = activation(x @ weight + bias)
  return x


def tower_scores(params, states, activation):
  """``u(s, a)`` for every action: ``[S, 50] -> [S, A]``."""
  h_s = _tower(params["state"], states, activation)  # [S, F]
  h_a = _tower(params["action"], jnp.eye(NUM_ACTIONS), activation)  # [A, F]
  (weight, bias), = params["head"]
  return h_s @ weight[:HIDDEN] + (h_a @ weight[HIDDEN:]).T + bias  # [S, 1] + [1, A]


def init_true_reward(key):
  return init_towers(key, num_layers=1)


def true_rewards(params, states):
  """``r* = u + sign(u)`` with tanh towers: ``[S, A]``."""
  u = tower_scores(params, states, jnp.tanh)
  return u + jnp.sign(u)


def init_reward_model(key):
  return init_towers(key, num_layers=2)


def reward_model_scores(params, states):
  return tower_scores(params, states, jax.nn.relu)


def sample_states(key, num: int):
  return jax.random.uniform(key, (num, STATE_DIM), minval=-1.0, maxval=1.0)


def init_policy(key):
  return init_torch_mlp(key, [STATE_DIM, HIDDEN, HIDDEN, NUM_ACTIONS])


def policy_logps(params, states):
  return jax.nn.log_softmax(mlp(params, states))  # [S, A]

"""Claims of the papers the losses come from, run as experiments on toy policies.

- Azar et al. 2023 (IPO, arXiv 2310.12036), Sec. 5: with deterministic preferences
  p(y1 > y2) = 1 and a uniform reference, IPO's optimum is pi(y1) = sigmoid(1 / (2 tau)),
  while DPO drives pi(y1) to 1 for any beta.
- Xu et al. 2024 (ICML, "Is DPO Superior to PPO for LLM Alignment?", arXiv 2404.10719),
  Table 1 / Theorem 4.1: DPO cannot tell a policy that moves mass onto an action no preference
  covers (y3) from one that does not; PPO's KL to the reference can.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign.losses import dpo_loss, ipo_loss
from jaxalign.ops import kl_k1

TAUS = jnp.array([0.1, 0.5, 1.0])
STEPS = 2000


def _train_two_action_policy(loss_fn):
  """Softmax policy over (y1, y2), one pair y1 > y2, uniform reference; vmapped over beta."""
  log_half = jnp.log(jnp.array([0.5]))
  optimizer = optax.adam(optax.cosine_decay_schedule(0.1, STEPS, alpha=0.1))

  def train(beta):
    def objective(logits):
      logps = jax.nn.log_softmax(logits)  # [2]
      return loss_fn(logps[:1], logps[1:], log_half, log_half, beta=beta)[0]

    def step(carry, _):
      logits, state = carry
      updates, state = optimizer.update(jax.grad(objective)(logits), state)
      logits = optax.apply_updates(logits, updates)
      return (logits, state), logits[0] - logits[1]  # the log-ratio gap h

    logits = jnp.zeros(2)
    _, gaps = jax.lax.scan(step, (logits, optimizer.init(logits)), length=STEPS)
    return gaps  # [STEPS]

  return jax.jit(jax.vmap(train))(TAUS)  # [3, STEPS]


def test_ipo_reaches_its_closed_form_and_dpo_does_not_stop():
  ipo_gaps = _train_two_action_policy(ipo_loss)
  # pi(y1) = sigmoid(1 / (2 tau)): tau 0.1 -> sigmoid(5) = 0.99331, 0.5 -> sigmoid(1) = 0.73106,
  # 1 -> sigmoid(0.5) = 0.62246
  np.testing.assert_allclose(jax.nn.sigmoid(ipo_gaps[:, -1]), [0.9933071490757153,
                                                             0.7310585786300049,
                                                             0.6224593312018546], atol=1e-4)
  dpo_gaps = _train_two_action_policy(dpo_loss)
  assert (jax.nn.sigmoid(dpo_gaps[:, -1]) > 0.99).all()
  # no fixed point: h rises at every step of the second half, to the last one
  assert (jnp.diff(dpo_gaps[:, STEPS // 2:], axis=1) > 0).all()
  assert (dpo_gaps[:, -1] > 2 * ipo_gaps[:, -1]).all()


def _ppo_objective(policy, reference, rewards, beta):
  """E_pi[r] - beta KL(pi || pi_ref), with 0 log 0 = 0 and an infinite KL off the support."""
  kl_terms = jnp.where(policy > 0, policy * kl_k1(jnp.log(policy), jnp.log(reference)), 0.0)
  return jnp.sum(policy * rewards) - beta * jnp.sum(kl_terms)


def test_xu_et_al_counterexample(x64):
  reference = jnp.array([0.5, 0.5, 0.0])  # y3 is never seen under the reference
  beta = 0.1

  def dpo(policy):  # the one pair y1 > y2
    logps = jnp.log(policy)
    return dpo_loss(logps[:1], logps[1:2], jnp.log(reference[:1]), jnp.log(reference[1:2]),
                    beta=beta)[0]

  for epsilon in (1e-3, 1e-9, 1e-200):
    # pi(y2) tends to 0 in both; pi(y1) / pi(y2) = 1 / epsilon in both
    spread = jnp.array([0.1, 0.1 * epsilon, 0.9 - 0.1 * epsilon])  # mass moved onto y3
    sharp = jnp.array([1.0, epsilon, 0.0]) / (1.0 + epsilon)
    # the same DPO loss: softplus(-beta log(1 / epsilon)), going to 0 (the minimum) as eps -> 0
    np.testing.assert_allclose(dpo(spread), dpo(sharp), rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(dpo(sharp), math.log1p(epsilon ** beta), rtol=1e-9)
  # with the same tiny pi(y2) = 1e-200 in both, both sit at DPO's minimum 0 (to within 1e-19)
  same = lambda p1, p3: jnp.array([p1, 1e-200, p3])
  assert dpo(same(0.1, 0.9)) < 1e-19 and dpo(same(1.0, 0.0)) < 1e-19

  # PPO with the reward r(y1) = 1, r(y2) = 0 (a reward model may say anything about y3: 10):
  rewards = jnp.array([1.0, 0.0, 10.0])
  sharp_limit, spread_limit = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.1, 0.0, 0.9])
  # sharp: 1 - beta (1 * log(1 / 0.5)) = 1 - 0.1 ln 2 = 0.9306853
  np.testing.assert_allclose(_ppo_objective(sharp_limit, reference, rewards, beta),
                             1 - 0.1 * math.log(2), rtol=1e-12)
  # spread: 0.9 log(0.9 / 0) = inf, so the objective is -inf however large r(y3) is
  assert _ppo_objective(spread_limit, reference, rewards, beta) == -jnp.inf

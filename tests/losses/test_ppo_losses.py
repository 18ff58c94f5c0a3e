"""PPO's clipped surrogate, clipped value loss and entropy bonus against hand values."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.losses import entropy_bonus, ppo_policy_loss, ppo_value_loss

MASK = jnp.array([[1, 1, 1, 0]])
MASK2 = jnp.array([[1, 1, 0]])


def test_clipped_surrogate():
  # ratios 1.5, 0.5, 1 (and a padded token); eps 0.2
  logps = jnp.log(jnp.array([[1.5, 0.5, 1.0, 9.0]]))
  old_logps = jnp.zeros((1, 4))
  advantages = jnp.array([[1.0, -1.0, 2.0, 5.0]])
  loss, metrics = ppo_policy_loss(logps, old_logps, advantages, MASK, clip_eps=0.2)
  # token 1 (A = 1):  max(-1.5, -1.2) = -1.2   (clipped term active)
  # token 2 (A = -1): max(0.5, 0.8) = 0.8      (clipped term active)
  # token 3 (A = 2):  max(-2, -2) = -2
  # mean: (-1.2 + 0.8 - 2) / 3 = -0.8
  np.testing.assert_allclose(loss, -0.8, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_fraction"], 2 / 3, rtol=1e-6)
  # 0.5 * (ln^2 1.5 + ln^2 0.5 + 0) / 3 = 0.1074758280
  np.testing.assert_allclose(metrics["approx_kl"], 0.10747582796856114, rtol=1e-5)
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, rtol=1e-6)  # (1.5 + 0.5 + 1) / 3


def test_dual_clip_bounds_negative_advantages():
  logps = jnp.log(jnp.array([[5.0, 2.0, 5.0]]))
  advantages = jnp.array([[-1.0, -1.0, 1.0]])
  loss, metrics = ppo_policy_loss(logps, jnp.zeros((1, 3)), advantages, jnp.ones((1, 3)),
                                  clip_eps=0.2, dual_clip=3.0)
  # token 1: max(5, 1.2) = 5 > c |A| = 3 -> 3; token 2: max(2, 1.2) = 2 < 3 stays
  # token 3 (A > 0): max(-5, -1.2) = -1.2;  mean (3 + 2 - 1.2) / 3
  np.testing.assert_allclose(loss, 3.8 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["dual_clip_fraction"], 1 / 3, rtol=1e-6)
  plain, _ = ppo_policy_loss(logps, jnp.zeros((1, 3)), advantages, jnp.ones((1, 3)))
  np.testing.assert_allclose(plain, 5.8 / 3, rtol=1e-6)


def test_old_logps_and_advantages_carry_no_gradient():
  logps = jnp.array([[-1.0, -2.0]])
  grad = jax.grad(lambda x: ppo_policy_loss(x, x, jnp.array([[1.0, -2.0]]), jnp.ones((1, 2)))[0])
  # ratio 1 (unclipped): d/dlogp (-A rho) = -A rho / 2 tokens = [-0.5, 1]
  np.testing.assert_allclose(grad(logps), [[-0.5, 1.0]], rtol=1e-6)


def test_clipped_value_loss():
  values, old_values = jnp.array([[1.0, 2.0, 7.0]]), jnp.array([[0.5, 2.0, 0.0]])
  returns = jnp.array([[2.0, 1.0, 0.0]])
  loss, metrics = ppo_value_loss(values, old_values, returns, MASK2, clip_eps=0.2)
  # token 1: (1 - 2)^2 = 1; clipped V = 0.5 + 0.2 = 0.7: (0.7 - 2)^2 = 1.69 -> 1.69
  # token 2: (2 - 1)^2 = 1 both -> 1;   0.5 * (1.69 + 1) / 2 = 0.6725
  np.testing.assert_allclose(loss, 0.6725, rtol=1e-6)
  np.testing.assert_allclose(metrics["value_clip_fraction"], 0.5)
  # unclipped: 0.5 * (1 + 1) / 2 = 0.5
  np.testing.assert_allclose(ppo_value_loss(values, old_values, returns, MASK2,
                                            clip_eps=None)[0], 0.5, rtol=1e-6)


def test_entropy_bonus():
  # -(ln 2 + ln 4) / 2 = -1.5 ln 2
  loss, metrics = entropy_bonus(jnp.array([[math.log(2), math.log(4), 99.0]]), MASK2)
  np.testing.assert_allclose(loss, -1.5 * math.log(2), rtol=1e-6)
  np.testing.assert_allclose(metrics["entropy"], 1.5 * math.log(2), rtol=1e-6)

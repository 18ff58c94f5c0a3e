"""DPO, cDPO, robust DPO, IPO and hinge against hand-computed values of the papers' formulas.

Two pairs, beta = 0.1. Sequence log-probs:
  pair 1: chosen -10 (ref -11), rejected -12 (ref -11): log-ratios +1, -1, h = 2, beta h = 0.2
  pair 2: chosen  -5 (ref  -5), rejected  -4 (ref -5): log-ratios  0, +1, h = -1, beta h = -0.1
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import dpo_loss, hinge_loss, ipo_loss, robust_dpo_loss

PAIRS = dict(chosen_logps=jnp.array([-10.0, -5.0]), rejected_logps=jnp.array([-12.0, -4.0]),
             ref_chosen_logps=jnp.array([-11.0, -5.0]), ref_rejected_logps=jnp.array([-11.0, -5.0]))
# softplus(-z) = -log sigmoid(z): softplus(-0.2) = log(1 + e^-0.2) = 0.5981388694,
#                                 softplus(0.1) = log(1 + e^0.1) = 0.7443966601
SOFTPLUS_M02, SOFTPLUS_01 = 0.5981388693815918, 0.7443966600735709


def test_dpo_hand_value_and_trl_metrics():
  loss, metrics = dpo_loss(**PAIRS, beta=0.1)
  # (0.5981388694 + 0.7443966601) / 2
  np.testing.assert_allclose(loss, 0.6712677647275813, rtol=1e-6)
  assert loss.dtype == jnp.float32
  # implicit rewards 0.1 * [1, 0] and 0.1 * [-1, 1]; margins [0.2, -0.1]; pair 1 wins only
  np.testing.assert_allclose(metrics["rewards/chosen"], 0.05, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/rejected"], 0.0, atol=1e-7)
  np.testing.assert_allclose(metrics["rewards/margins"], 0.05, rtol=1e-6)
  assert metrics["rewards/accuracies"] == 0.5
  np.testing.assert_allclose(metrics["logps/chosen"], -7.5)
  np.testing.assert_allclose(metrics["logps/rejected"], -8.0)
  assert all(value.dtype == jnp.float32 and value.shape == () for value in metrics.values())


def test_conservative_dpo_label_smoothing():
  # -(1 - e) log s(z) - e log s(-z) = softplus(-z) + e z  (since log s(z) - log s(-z) = z)
  # e = 0.1: (0.5981388694 + 0.02 + 0.7443966601 - 0.01) / 2 = 0.6762677647
  loss, _ = dpo_loss(**PAIRS, beta=0.1, label_smoothing=0.1)
  np.testing.assert_allclose(loss, 0.6762677647275813, rtol=1e-6)


def test_robust_dpo():
  # [(1 - e) softplus(-z) - e softplus(z)] / (1 - 2e), softplus(z) = softplus(-z) + z, e = 0.1:
  # z = 0.2:  (0.9 * 0.5981388694 - 0.1 * 0.7981388694) / 0.8 = 0.5731388694
  # z = -0.1: (0.9 * 0.7443966601 - 0.1 * 0.6443966601) / 0.8 = 0.7568966601
  loss, _ = robust_dpo_loss(**PAIRS, beta=0.1, label_smoothing=0.1)
  np.testing.assert_allclose(loss, (0.5731388693815918 + 0.7568966600735708) / 2, rtol=1e-6)
  with pytest.raises(ValueError):
    robust_dpo_loss(**PAIRS, label_smoothing=0.5)


def test_ipo_eq_17():
  # (h - 1 / (2 tau))^2 with tau = 0.1: (2 - 5)^2 = 9, (-1 - 5)^2 = 36; mean 22.5
  loss, metrics = ipo_loss(**PAIRS, beta=0.1)
  np.testing.assert_allclose(loss, 22.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/margins"], 0.05, rtol=1e-6)


def test_ipo_length_normalised_like_trl():
  # log-ratios divided by lengths: pair 1: 1/2 - (-1)/1 = 1.5 -> (1.5 - 5)^2 = 12.25
  #                                pair 2: 0/4 - 1/5 = -0.2 -> (-0.2 - 5)^2 = 27.04; mean 19.645
  lengths = dict(chosen_lengths=jnp.array([2, 4]), rejected_lengths=jnp.array([1, 5]))
  loss, metrics = ipo_loss(**PAIRS, beta=0.1, **lengths)
  np.testing.assert_allclose(loss, 19.645, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/chosen"], 0.05, rtol=1e-6)  # summed, as TRL logs
  # the same number from already-averaged log-probs
  averaged = dict(chosen_logps=PAIRS["chosen_logps"] / jnp.array([2.0, 4.0]),
                  ref_chosen_logps=PAIRS["ref_chosen_logps"] / jnp.array([2.0, 4.0]),
                  rejected_logps=PAIRS["rejected_logps"] / jnp.array([1.0, 5.0]),
                  ref_rejected_logps=PAIRS["ref_rejected_logps"] / jnp.array([1.0, 5.0]))
  np.testing.assert_allclose(ipo_loss(**averaged, beta=0.1)[0], 19.645, rtol=1e-5)


def test_hinge():
  # beta 0.1: relu(1 - 0.2) = 0.8, relu(1 + 0.1) = 1.1 -> 0.95
  np.testing.assert_allclose(hinge_loss(**PAIRS, beta=0.1)[0], 0.95, rtol=1e-6)
  # beta 1: relu(1 - 2) = 0, relu(1 + 1) = 2 -> 1
  np.testing.assert_allclose(hinge_loss(**PAIRS, beta=1.0)[0], 1.0, rtol=1e-6)


def test_reference_free_and_weights():
  # reference_free: h = (-10 + 12, -5 + 4) = (2, -1): the same h as with the reference here
  loss, _ = dpo_loss(PAIRS["chosen_logps"], PAIRS["rejected_logps"], reference_free=True)
  np.testing.assert_allclose(loss, 0.6712677647275813, rtol=1e-6)
  with pytest.raises(ValueError):
    dpo_loss(PAIRS["chosen_logps"], PAIRS["rejected_logps"])
  # weights [1, 3]: (0.5981388694 + 3 * 0.7443966601) / 4 = 0.7078322124
  loss, _ = dpo_loss(**PAIRS, weights=jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(loss, (SOFTPLUS_M02 + 3 * SOFTPLUS_01) / 4, rtol=1e-6)
  # a micro-batch holding pair 1 of a global batch of 2: 0.5981388694 / 2
  first = {name: value[:1] for name, value in PAIRS.items()}
  np.testing.assert_allclose(dpo_loss(**first, denominator=2)[0], SOFTPLUS_M02 / 2, rtol=1e-6)

"""SimPO, ORPO and KTO against hand-computed values of the papers' formulas."""

import math

import jax.numpy as jnp
import numpy as np

from jaxalign.losses import kto_loss, kto_reference_kl, orpo_loss, simpo_loss


def test_simpo_eq_6():
  # averaged log-probs; beta 2, gamma 0.5:
  # z = 2 (-1 + 1.5) - 0.5 = 0.5 and 2 (-2 + 1.8) - 0.5 = -0.9
  # log(1 + e^-0.5) = 0.4740769842, log(1 + e^0.9) = 1.2411538747; mean 0.8576154295
  loss, metrics = simpo_loss(jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.8]), beta=2.0, gamma=0.5)
  np.testing.assert_allclose(loss, 0.8576154294560973, rtol=1e-6)
  # rewards beta * logp: chosen mean 2 * -1.5 = -3, rejected 2 * -1.65 = -3.3; pair 1 wins
  np.testing.assert_allclose(metrics["rewards/chosen"], -3.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/margins"], 0.3, rtol=1e-5)
  assert metrics["rewards/accuracies"] == 0.5


def test_orpo_odds_ratio():
  # P_w = 1/2, P_l = 1/4: odds 1 and 1/3, log odds ratio ln 3; log sigmoid(ln 3) = ln(3/4)
  # L = nll - beta * ln(3/4) = 2 + 0.1 * 0.2876820725 = 2.0287682072
  loss, metrics = orpo_loss(jnp.array([math.log(0.5)]), jnp.array([math.log(0.25)]), 2.0,
                            beta=0.1)
  np.testing.assert_allclose(loss, 2.0287682072451783, rtol=1e-6)
  np.testing.assert_allclose(metrics["log_odds_chosen"], math.log(3.0), rtol=1e-6)
  np.testing.assert_allclose(metrics["log_odds_ratio"], math.log(0.75), rtol=1e-6)
  np.testing.assert_allclose(metrics["nll_loss"], 2.0)
  np.testing.assert_allclose(metrics["rewards/chosen"], 0.1 * math.log(0.5), rtol=1e-6)


def test_kto_eq_7():
  # z0 = 0.5, beta 0.1; desirable r = 2: 1 - s(0.1 (2 - 0.5)) = 1 - s(0.15) = 0.4625701547
  # undesirable r = -3, lambda_U = 1.5: 1.5 (1 - s(0.1 (0.5 + 3))) = 1.5 * 0.4133824211
  # mean over the two examples: 0.5413218931
  logps, ref_logps = jnp.array([-8.0, -9.0]), jnp.array([-10.0, -6.0])
  desirable = jnp.array([True, False])
  loss, metrics = kto_loss(logps, ref_logps, desirable, 0.5, beta=0.1, undesirable_weight=1.5)
  np.testing.assert_allclose(loss, 0.5413218931401276, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/chosen"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/rejected"], -0.3, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/margins"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["kl"], 0.5)
  # a negative KL estimate is clamped to 0: 1 - s(0.2) and 1.5 (1 - s(0.3))
  expected = ((1 - 1 / (1 + math.exp(-0.2))) + 1.5 * (1 - 1 / (1 + math.exp(-0.3)))) / 2
  np.testing.assert_allclose(kto_loss(logps, ref_logps, desirable, -1.0, beta=0.1,
                                      undesirable_weight=1.5)[0], expected, rtol=1e-6)


def test_kto_reference_kl():
  # mean([-3 + 4, -4 + 4]) = 0.5; a negative mean clamps to 0
  np.testing.assert_allclose(kto_reference_kl(jnp.array([-3.0, -4.0]), jnp.array([-4.0, -4.0])),
                             0.5)
  assert kto_reference_kl(jnp.array([-5.0]), jnp.array([-4.0])) == 0.0


def test_kto_halves_with_global_denominators_add_up_to_the_whole():
  # 6 weighted examples split into even and odd rows: with the global counts (all, desirable,
  # undesirable) as denominators, the halves' losses and metrics sum to the whole batch's
  logps = jnp.array([-8.0, -9.0, -3.0, -7.0, -5.0, -6.0])
  ref_logps = jnp.array([-10.0, -6.0, -4.0, -7.5, -9.0, -2.0])
  desirable = jnp.array([True, False, False, True, True, False])
  weights = jnp.array([1.0, 2.0, 0.0, 1.0, 0.5, 1.0])
  knobs = dict(beta=0.1, undesirable_weight=1.5)
  loss, metrics = kto_loss(logps, ref_logps, desirable, 0.4, weights=weights, **knobs)
  counts = dict(denominator=jnp.sum(weights),
                desirable_denominator=jnp.sum(jnp.where(desirable, weights, 0.0)),
                undesirable_denominator=jnp.sum(jnp.where(desirable, 0.0, weights)))
  halves = [kto_loss(logps[i::2], ref_logps[i::2], desirable[i::2], 0.4, weights=weights[i::2],
                     **counts, **knobs) for i in (0, 1)]
  np.testing.assert_allclose(halves[0][0] + halves[1][0], loss, rtol=1e-6)
  assert halves[0][1].keys() == metrics.keys()
  for key in metrics:  # kl too: each half reports z0 times its share of the weight
    np.testing.assert_allclose(halves[0][1][key] + halves[1][1][key], metrics[key], rtol=1e-6,
                               err_msg=key)
  np.testing.assert_allclose(metrics["kl"], 0.4, rtol=1e-6)
  np.testing.assert_allclose(metrics["logps/chosen"], (-8.0 - 7.0 - 2.5) / 2.5, rtol=1e-6)

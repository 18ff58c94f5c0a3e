"""The shared pieces of the reproductions: the exact KL-regularised objective and the loop."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import adam, fit, kl_regularized_policy_loss, mean_interval


def _objective(logits, ref_logps, rewards, beta):
  """``mean_x [sum_y pi r - beta KL(pi || pi_ref)]`` written out directly."""
  logps = jax.nn.log_softmax(logits)
  pi = jnp.exp(logps)
  return jnp.mean((pi * (rewards - beta * (logps - ref_logps))).sum(-1))


def test_kl_regularized_loss_is_minus_the_objective_with_its_gradient():
  key_logits, key_ref, key_rewards = jax.random.split(jax.random.key(0), 3)
  logits = jax.random.normal(key_logits, (5, 4))
  ref_logps = jax.nn.log_softmax(jax.random.normal(key_ref, (5, 4)))
  rewards = jax.random.normal(key_rewards, (5, 4))
  loss = lambda z: kl_regularized_policy_loss(jax.nn.log_softmax(z), ref_logps, rewards, 0.3)[0]
  value, grad = jax.jit(jax.value_and_grad(loss))(logits)
  expected, expected_grad = jax.value_and_grad(_objective)(logits, ref_logps, rewards, 0.3)
  np.testing.assert_allclose(value, -expected, rtol=1e-5)
  np.testing.assert_allclose(grad, -expected_grad, rtol=1e-4, atol=1e-6)


def test_kl_regularized_optimum_is_the_gibbs_policy():
  # argmax_pi E_pi[r] - beta KL(pi || ref) = ref * exp(r / beta) / Z (Rafailov et al. 2023, Eq. 4)
  ref_logps = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
  rewards, beta = jnp.array([[0.0, 1.0, 0.5]]), 0.5
  loss = lambda z, _: kl_regularized_policy_loss(jax.nn.log_softmax(z), ref_logps, rewards,
                                                 beta)[0]
  logits = fit(loss, jnp.zeros((1, 3)), adam(0.05), 2000)
  np.testing.assert_allclose(jax.nn.softmax(logits), jax.nn.softmax(ref_logps + rewards / beta),
                             atol=1e-4)


def test_fit_records_and_is_deterministic():
  loss = lambda x, key: jnp.sum((x - jax.random.normal(key, x.shape)) ** 2)
  run = lambda: fit(loss, jnp.zeros(2), adam(0.1), 30, key=jax.random.key(1),
                    record_fn=lambda x: x, record_every=10)
  (params, records), (params_again, _) = run(), run()
  assert records.shape == (3, 2)
  np.testing.assert_array_equal(records[-1], params)
  np.testing.assert_array_equal(params, params_again)


def test_mean_interval_is_the_student_t_interval():
  mean, half = mean_interval(np.array([1.0, 2.0, 3.0]))
  # t_{0.975, 2} = 4.302653; sem = 1 / sqrt(3)
  np.testing.assert_allclose([mean, half], [2.0, 4.302653 / np.sqrt(3)], rtol=1e-6)

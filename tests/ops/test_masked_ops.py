"""Masked reductions, whitening and KL estimators against hand values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from jaxalign.ops import (kl_k1, kl_k2, kl_k3, last_true_index, log1mexp, masked_mean,
                          masked_sum, masked_var, masked_whiten)

X = jnp.array([1.0, 2.0, 3.0, jnp.inf])  # the padded entry holds garbage
MASK = jnp.array([1, 1, 1, 0])


def test_masked_mean_sum_and_denominator():
  assert masked_sum(X, MASK) == 6.0
  assert masked_mean(X, MASK) == 2.0  # 6 / 3
  assert masked_mean(X, MASK, denominator=12) == 0.5  # 6 / 12: a micro-batch of a global 12
  assert masked_mean(X, jnp.zeros(4)) == 0.0  # 0 / max(0, 1)
  np.testing.assert_allclose(masked_mean(jnp.array([[1.0, 3.0], [5.0, 7.0]]),
                                         jnp.array([[1, 1], [1, 0]]), axis=1), [2.0, 5.0])


def test_micro_batches_with_global_denominator_add_up():
  x = jax.random.normal(jax.random.key(0), (4, 6))
  mask = jax.random.bernoulli(jax.random.key(1), 0.6, (4, 6))
  whole = masked_mean(x, mask)
  count = mask.sum()
  pieces = masked_mean(x[:2], mask[:2], count) + masked_mean(x[2:], mask[2:], count)
  np.testing.assert_allclose(pieces, whole, rtol=1e-6)


def test_masked_var_and_whiten():
  # mean 2; squared deviations 1, 0, 1: biased var 2/3, unbiased 2/2 = 1
  np.testing.assert_allclose(masked_var(X, MASK, unbiased=False), 2.0 / 3.0, rtol=1e-6)
  np.testing.assert_allclose(masked_var(X, MASK), 1.0, rtol=1e-6)
  # (x - 2) / sqrt(1 + 1e-8); padding -> 0
  np.testing.assert_allclose(masked_whiten(X, MASK), [-1.0, 0.0, 1.0, 0.0], atol=1e-6)
  # shift_mean=False keeps the mean: x - 2 + 2
  np.testing.assert_allclose(masked_whiten(X, MASK, shift_mean=False), [1.0, 2.0, 3.0, 0.0],
                             atol=1e-6)


def test_kl_estimators_hand_values():
  logps, ref_logps = jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.5])
  np.testing.assert_allclose(kl_k1(logps, ref_logps), [0.5, -0.5])
  np.testing.assert_allclose(kl_k2(logps, ref_logps), [0.125, 0.125])  # 0.5 * 0.5^2
  # log r = ref - logp = -0.5, 0.5: e^{-0.5} - 1 + 0.5 = 0.1065307, e^{0.5} - 1 - 0.5 = 0.1487213
  np.testing.assert_allclose(kl_k3(logps, ref_logps), [0.10653065971263342, 0.1487212707001282],
                             rtol=1e-6)


def test_kl_k3_is_finite_for_a_gap_of_1e3():
  k3 = kl_k3(jnp.array([-1001.0, -1.0]), jnp.array([-1.0, -1001.0]))
  # clipped at +-20: e^20 - 1 - 20 and e^-20 - 1 + 20
  np.testing.assert_allclose(k3, [math.exp(20) - 21, math.exp(-20) + 19], rtol=1e-6)
  grad = jax.grad(lambda x: kl_k3(x, jnp.array([-1.0, -1001.0])).sum())(jnp.array([-1001.0, -1.0]))
  assert np.isfinite(grad).all()


def test_last_true_index_and_log1mexp():
  mask = jnp.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(last_true_index(mask), [2, 3, 0])
  # log(1 - 1/2) = -ln 2; log(1 - e^-10); and the clamp at log p = 0 keeps it finite
  np.testing.assert_allclose(log1mexp(jnp.array([math.log(0.5), -10.0])),
                             [math.log(0.5), math.log1p(-math.exp(-10.0))], rtol=1e-6)
  assert np.isfinite(jax.grad(lambda x: log1mexp(x))(0.0))


def test_gradients(x64):
  x = jax.random.normal(jax.random.key(2), (3, 4), jnp.float64)
  mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]])
  for fn in (masked_mean, masked_var, lambda x, m: masked_whiten(x, m) * x):
    check_grads(jax.jit(lambda x: fn(x, mask)), (x,), order=1, modes=["rev"])
  ref = jax.random.normal(jax.random.key(3), (3, 4), jnp.float64)
  for fn in (kl_k1, kl_k2, kl_k3):
    check_grads(jax.jit(fn), (x, ref), order=1, modes=["rev"])

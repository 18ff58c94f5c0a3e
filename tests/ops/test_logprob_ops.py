"""Token / sequence log-probs and entropy: hand values, the shift, numerics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxalign.ops import (entropy_from_logits, sequence_logprobs, shifted_entropy_from_logits,
                          shifted_token_logprobs, token_logprobs)

LN3 = math.log(3.0)


def test_token_logprobs_hand_values():
  logits = jnp.array([[[0.0, LN3], [LN3, 0.0]]])  # [1, 2, 2]
  tokens = jnp.array([[1, 1]])
  # softmax([0, ln 3]) = [1/4, 3/4]: log(3/4) = -0.2876821; softmax([ln 3, 0])[1] = 1/4
  np.testing.assert_allclose(token_logprobs(logits, tokens), [[math.log(0.75), math.log(0.25)]],
                             rtol=1e-6)
  # temperature 2: softmax([0, ln3 / 2]) = [1, sqrt 3] / (1 + sqrt 3): log p0 = -ln(1 + sqrt 3)
  got = token_logprobs(logits, jnp.zeros_like(tokens), temperature=2.0)[0, 0]
  np.testing.assert_allclose(got, -1.005052538742381, rtol=1e-6)


def test_shift_scores_token_t_from_logits_t_minus_1():
  vocab = 5
  tokens = jnp.array([[3, 1, 4, 2]])
  logits = jax.random.normal(jax.random.key(0), (1, 4, vocab))
  shifted = shifted_token_logprobs(logits, tokens)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  expected = [0.0] + [float(log_probs[0, t - 1, tokens[0, t]]) for t in range(1, 4)]
  np.testing.assert_allclose(shifted[0], expected, rtol=1e-6)
  entropies = shifted_entropy_from_logits(logits)
  assert entropies[0, 0] == 0.0
  np.testing.assert_allclose(entropies[0, 1:], entropy_from_logits(logits)[0, :-1], rtol=1e-6)


def test_sequence_logprobs_sum_and_average():
  token_logps = jnp.array([[-9.0, -1.0, -2.0, -7.0], [-9.0, -3.0, -5.0, -5.0]])
  mask = jnp.array([[0, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_allclose(sequence_logprobs(token_logps, mask), [-3.0, 0.0])
  # (-1 - 2) / 2 = -1.5; an empty row divides by max(0, 1) = 1
  np.testing.assert_allclose(sequence_logprobs(token_logps, mask, average=True), [-1.5, 0.0])


def test_entropy_hand_values():
  # uniform over 4: ln 4; [1/4, 3/4]: -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351
  np.testing.assert_allclose(entropy_from_logits(jnp.zeros((4,))), math.log(4.0), rtol=1e-6)
  np.testing.assert_allclose(entropy_from_logits(jnp.array([0.0, LN3])), 0.5623351446188083,
                             rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_extreme_logits_stay_finite_in_float32(dtype):
  logits = jnp.array([[[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [0.0, 0.0, 0.0]]], dtype)
  tokens = jnp.array([[1, 2, 0]])

  def total(logits):
    return (shifted_token_logprobs(logits, tokens).sum()
            + token_logprobs(logits, tokens).sum() + entropy_from_logits(logits).sum())

  value, grad = jax.jit(jax.value_and_grad(total))(logits)
  assert shifted_token_logprobs(logits, tokens).dtype == jnp.float32
  assert entropy_from_logits(logits).dtype == jnp.float32
  assert np.isfinite(value) and np.isfinite(np.asarray(grad, np.float32)).all()
  # token 1 at position 0 sits 2e4 below the max (as rounded in the input dtype): log p = -2e4
  gap = float(logits[0, 0, 1]) - float(logits[0, 0, 0])
  np.testing.assert_allclose(token_logprobs(logits, tokens)[0, 0], gap, rtol=1e-6)


def test_gradients(x64):
  logits = jax.random.normal(jax.random.key(1), (2, 3, 5), jnp.float64)
  tokens = jnp.array([[0, 4, 2], [1, 1, 3]])
  mask = jnp.array([[0, 1, 1], [0, 1, 0]])
  average_logps = lambda x: sequence_logprobs(shifted_token_logprobs(x, tokens, 0.7), mask, True)
  check_grads(jax.jit(average_logps), (logits,), order=1, modes=["rev"])
  check_grads(jax.jit(shifted_entropy_from_logits), (logits,), order=1, modes=["rev"])

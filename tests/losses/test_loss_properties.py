"""Every loss: runs under jit, passes check_grads, is finite at extremes and in bf16, and
ignores padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ._cases import make_cases, pad

NAMES = [case.name for case in make_cases()]


def _case(name, **kwargs):
  return next(case for case in make_cases(**kwargs) if case.name == name)


def _scalar_loss(case):
  return lambda *floats: case(**dict(zip(case.floats, floats)))[0]


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager_and_metrics_are_f32_scalars(name):
  case = _case(name)
  eager_loss, eager_metrics = case(**case.floats)
  loss, metrics = jax.jit(lambda floats: case(**floats))(case.floats)
  np.testing.assert_allclose(loss, eager_loss, rtol=1e-5, atol=1e-6)
  assert loss.shape == () and loss.dtype == jnp.float32 and np.isfinite(loss)
  assert metrics.keys() == eager_metrics.keys() and metrics
  for value in metrics.values():
    assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value)


@pytest.mark.parametrize("name", NAMES)
def test_check_grads(name, x64):
  case = _case(name, dtype=jnp.float64)
  check_grads(jax.jit(_scalar_loss(case)), tuple(case.floats.values()), order=1, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_finite_with_gaps_of_1e3(name, dtype):
  case = _case(name, scale=1e3, dtype=dtype)
  loss, grads = jax.jit(jax.value_and_grad(_scalar_loss(case), argnums=tuple(
      range(len(case.floats)))))(*case.floats.values())
  assert loss.dtype == jnp.float32 and np.isfinite(loss)
  for grad in grads:
    assert np.isfinite(np.asarray(grad, np.float32)).all()
  for value in case(**case.floats)[1].values():
    assert value.dtype == jnp.float32 and np.isfinite(value)


@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_nothing(name):
  case = _case(name)
  padded = pad(case)
  loss, metrics = case(**case.floats)
  padded_loss, padded_metrics = padded(**padded.floats)
  np.testing.assert_allclose(padded_loss, loss, rtol=1e-6, atol=1e-7)
  assert padded_metrics.keys() == metrics.keys()
  for key in metrics:
    if key == "num_tokens" or key.endswith("/num_tokens"):
      continue
    np.testing.assert_allclose(padded_metrics[key], metrics[key], rtol=1e-6, atol=1e-7,
                               err_msg=key)


@pytest.mark.parametrize("name", [case.name for case in make_cases() if case.padding == "rows"])
def test_pair_losses_at_probability_one_and_gaps_of_exactly_1e3(name):
  case = _case(name)
  # each [B] input a rotation of (0, -1000, -1): log-prob 0 (probability 1) and gaps of 1e3
  # between chosen and rejected, policy and reference, in both directions
  pattern = jnp.array([0.0, -1000.0, -1.0])
  floats = {name: jnp.roll(pattern, i) if jnp.ndim(x) == 1 else x
            for i, (name, x) in enumerate(case.floats.items())}
  loss, grads = jax.value_and_grad(lambda floats: case(**floats)[0])(floats)
  assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
  assert all(np.isfinite(value) for value in case(**floats)[1].values())

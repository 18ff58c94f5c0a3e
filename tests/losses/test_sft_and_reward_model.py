"""SFT and Bradley-Terry against hand-computed values."""

import jax.numpy as jnp
import numpy as np

from jaxalign.losses import bradley_terry_loss, sft_loss


def test_sft_token_mean():
  token_logps = jnp.array([[0.0, -1.0, -2.0, -50.0], [0.0, -0.5, -70.0, -70.0]])
  loss_mask = jnp.array([[0, 1, 1, 0], [0, 1, 0, 0]])
  # (1 + 2 + 0.5) / 3 tokens = 7/6, not the mean of the per-row means (1.5 + 0.5) / 2 = 1
  loss, metrics = sft_loss(token_logps, loss_mask)
  np.testing.assert_allclose(loss, 7 / 6, rtol=1e-6)
  np.testing.assert_allclose(metrics["nll"], 7 / 6, rtol=1e-6)
  assert metrics["num_tokens"] == 3.0
  np.testing.assert_allclose(sft_loss(token_logps, loss_mask, denominator=7)[0], 0.5, rtol=1e-6)


def test_bradley_terry():
  chosen, rejected = jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0])
  # diffs [1, -1]: (log(1 + e^-1) + log(1 + e)) / 2 = (0.3132616875 + 1.3132616875) / 2
  loss, metrics = bradley_terry_loss(chosen, rejected)
  np.testing.assert_allclose(loss, 0.8132616875182228, rtol=1e-6)
  assert metrics["accuracy"] == 0.5
  np.testing.assert_allclose(metrics["margin"], 0.0, atol=1e-7)
  np.testing.assert_allclose(metrics["chosen_reward"], 1.0)
  np.testing.assert_allclose(metrics["rejected_reward"], 1.0)
  # margin [0.5, 0]: (log(1 + e^-0.5) + log(1 + e)) / 2 = 0.8936693358
  np.testing.assert_allclose(bradley_terry_loss(chosen, rejected, jnp.array([0.5, 0.0]))[0],
                             0.8936693358491647, rtol=1e-6)
  # centring: + 0.01 * mean((2 + 1)^2, (0 + 1)^2) = + 0.05
  np.testing.assert_allclose(
      bradley_terry_loss(chosen, rejected, center_rewards_coefficient=0.01)[0],
      0.8132616875182228 + 0.05, rtol=1e-6)

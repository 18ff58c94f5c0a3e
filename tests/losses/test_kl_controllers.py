"""Ziegler et al. 2019's adaptive KL controller, and the fixed one."""

import jax
import numpy as np

from jaxalign.losses import AdaptiveKLController, FixedKLController


def test_adaptive_controller_follows_ziegler():
  controller = AdaptiveKLController(value=0.2, target=6.0, horizon=10000.0)
  # KL 9: e = clip(9/6 - 1, +-0.2) = 0.2; beta = 0.2 (1 + 0.2 * 256 / 10000) = 0.201024
  np.testing.assert_allclose(controller.update(9.0, 256).value, 0.201024, rtol=1e-6)
  # KL 3: e = clip(-0.5) = -0.2 -> 0.2 (1 - 0.00512) = 0.198976
  np.testing.assert_allclose(controller.update(3.0, 256).value, 0.198976, rtol=1e-6)
  # KL 6.6: e = 0.1 (inside the clip) -> 0.2 (1 + 0.1 * 256 / 10000) = 0.200512
  np.testing.assert_allclose(controller.update(6.6, 256).value, 0.200512, rtol=1e-6)


def test_controllers_are_pytrees_under_jit():
  controller = AdaptiveKLController(value=0.2, target=6.0, horizon=10000.0)
  updated = jax.jit(lambda state, kl: state.update(kl, 256))(controller, 9.0)
  assert isinstance(updated, AdaptiveKLController) and updated.target == 6.0
  np.testing.assert_allclose(updated.value, 0.201024, rtol=1e-6)
  fixed = FixedKLController(value=0.05)
  assert jax.jit(lambda state: state.update(100.0, 256))(fixed).value == np.float32(0.05)

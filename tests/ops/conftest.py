import jax
import pytest


@pytest.fixture
def x64():
  """float64 for gradient checks; switched back off afterwards."""
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)

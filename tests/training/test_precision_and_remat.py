"""Mixed precision (bf16 compute, f32 master params, f32 losses) and rematerialisation."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models import init_params, tiny_gpt2
from jaxalign.training.objectives import PreferenceObjective
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import make_train_step
from tests.training.pairs import random_pairs

SGD = OptimizerConfig(name="sgd", learning_rate=1.0, grad_clip=None)


def _step(config):
  params = init_params(tiny_gpt2(), jax.random.key(0))
  ref = init_params(tiny_gpt2(), jax.random.key(1))
  state = TrainState.create(params, make_optimizer(SGD), seed=0, ref_params=ref)
  objective = PreferenceObjective(config, preference_loss("dpo").loss_term)
  return make_train_step(objective)(state, random_pairs(0))


def test_bf16_compute_keeps_f32_master_params_and_f32_loss():
  f32_state, f32_metrics = _step(tiny_gpt2())
  state, metrics = _step(tiny_gpt2(dtype="bfloat16"))
  assert metrics["loss"].dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
  assert abs(float(metrics["loss"]) - float(f32_metrics["loss"])) < 2e-2
  update = lambda s: jax.tree_util.tree_leaves(s.params)[0]
  assert np.isfinite(np.asarray(update(state))).all()


def test_remat_gives_the_same_step():
  plain, plain_metrics = _step(tiny_gpt2())
  remat, remat_metrics = _step(tiny_gpt2(remat=True))
  np.testing.assert_allclose(remat_metrics["loss"], plain_metrics["loss"], atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(plain.params), jax.tree_util.tree_leaves(remat.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)

"""A step gives the same loss and params on 1 device, on data-parallel and FSDP meshes, and
with gradient accumulation; same seed, same bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import init_params, tiny_gpt2
from jaxalign.parallel import MeshConfig, make_mesh, shard_batch, shard_params
from jaxalign.training.objectives import PreferenceObjective, SFTObjective
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import make_train_step
from tests.training.pairs import random_pairs

CONFIG = tiny_gpt2()
# Plain SGD: the update is the gradient itself, so "same params" means "same gradient".
# (Adam's first step divides g by |g| + eps: entries with |g| ~ eps turn float noise into
# 1e-5 differences, which says nothing about the gradient.)
SGD = OptimizerConfig(name="sgd", learning_rate=1.0, grad_clip=None)


def _state(optimizer=SGD, mesh=None):
  params, ref = init_params(CONFIG, jax.random.key(0)), init_params(CONFIG, jax.random.key(1))
  if mesh is not None:
    params, ref = shard_params(params, mesh), shard_params(ref, mesh)
  return TrainState.create(params, make_optimizer(optimizer), seed=0, ref_params=ref)


def _dpo():
  return PreferenceObjective(CONFIG, preference_loss("dpo", beta=0.1).loss_term)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_one_step_is_the_same_on_every_mesh():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  batch = random_pairs(0)
  single, metrics = make_train_step(_dpo())(_state(), batch)
  for mesh_config in (MeshConfig(data=8), MeshConfig(data=2, fsdp=4), MeshConfig(fsdp=8, data=1)):
    mesh = make_mesh(mesh_config)
    state = _state(mesh=mesh)
    assert any(len(x.sharding.device_set) == 8 for x in jax.tree_util.tree_leaves(state.params))
    sharded, sharded_metrics = make_train_step(_dpo())(
        state, shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh))
    assert abs(float(sharded_metrics["loss"]) - float(metrics["loss"])) < 1e-5
    assert _max_diff(sharded.params, single.params) < 1e-5, mesh_config


@pytest.mark.parametrize("objective", ["dpo", "sft"])
def test_four_micro_batches_of_two_equal_one_batch_of_eight(objective):
  batch = random_pairs(1)
  if objective == "sft":
    obj = SFTObjective(CONFIG)
    batch = {"tokens": batch["chosen_tokens"], "attention_mask": batch["chosen_attention_mask"],
             "loss_mask": batch["chosen_loss_mask"]}
  else:
    obj = _dpo()
  whole, metrics = make_train_step(obj)(_state(), batch)
  split, split_metrics = make_train_step(obj, micro_batches=4)(_state(), batch)
  assert _max_diff(whole.params, split.params) < 1e-5
  for name in metrics:
    np.testing.assert_allclose(split_metrics[name], metrics[name], atol=1e-5, err_msg=name)


def test_same_seed_same_bits_different_data_different_result():
  adamw = OptimizerConfig(learning_rate=1e-3)
  step = make_train_step(_dpo(), donate=False)
  a, b = _state(adamw), _state(adamw)
  for seed in range(3):
    a, _ = step(a, random_pairs(seed))
    b, _ = step(b, random_pairs(seed))
  assert _max_diff(a.params, b.params) == 0.0
  c = _state(adamw)
  for seed in range(3):
    c, _ = step(c, random_pairs(seed + 10))
  assert _max_diff(a.params, c.params) > 0.0


def test_step_traces_once():
  step = make_train_step(_dpo())
  state = _state()
  for seed in range(3):
    state, _ = step(state, random_pairs(seed))
  assert step._cache_size() == 1

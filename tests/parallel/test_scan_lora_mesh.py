"""One DPO step on data=2 x fsdp=2 x tensor=2 (8 CPU devices) with the stacked layout
(``scan_layers``) and with LoRA adapters over a frozen base equals the unrolled one-device step
to 1e-5: the sharding rules skip the layer axis and place adapters by their projection's
path (tests/models/test_scan_layers.py checks the rules at the spec level)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import LoraConfig, init_lora, init_params, tiny_llama
from jaxalign.models.layer_stack import stack_layers, unstack_layers
from jaxalign.parallel import MeshConfig, make_mesh, shard_batch, shard_params
from jaxalign.training.objectives import PreferenceObjective
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import make_train_step
from tests.training.pairs import random_pairs

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")

SGD = OptimizerConfig(name="sgd", learning_rate=1.0, grad_clip=None)  # update = gradient
MESH = MeshConfig(data=2, fsdp=2, tensor=2)


def _dpo(config):
  return PreferenceObjective(config, preference_loss("dpo", beta=0.1).loss_term)


def _copy(tree):  # the step donates its state
  return jax.tree_util.tree_map(jnp.copy, tree)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _spans_8(tree):
  return any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
             for x in jax.tree_util.tree_leaves(tree))


def test_scan_layers_dpo_step_on_a_tensor_parallel_mesh():
  config = tiny_llama(vocab_size=256)
  batch = random_pairs(0)
  params, ref = init_params(config, jax.random.key(0)), init_params(config, jax.random.key(1))
  tx = make_optimizer(SGD)
  single, metrics = make_train_step(_dpo(config))(
      TrainState.create(_copy(params), tx, 0, ref_params=_copy(ref)), batch)

  scanned = config.replace(scan_layers=True)
  mesh = make_mesh(MESH)
  stacked = shard_params(stack_layers(params, config.num_layers), mesh)
  assert _spans_8(stacked)
  q = stacked["layers"]["attn"]["q_proj"]["kernel"]
  assert q.sharding.spec[0] is None and "tensor" in str(q.sharding.spec)  # layer axis whole
  state = TrainState.create(stacked, tx, 0,
                            ref_params=shard_params(stack_layers(ref, config.num_layers), mesh))
  sharded, sharded_metrics = make_train_step(_dpo(scanned))(
      state, shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh))
  assert abs(float(sharded_metrics["loss"]) - float(metrics["loss"])) < 1e-5
  assert _max_diff(unstack_layers(sharded.params, config.num_layers), single.params) < 1e-5


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan_layers"])
def test_lora_dpo_step_on_a_tensor_parallel_mesh(scan):
  config = tiny_llama(vocab_size=256, lora=LoraConfig(rank=4, alpha=8.0))
  batch = random_pairs(1)
  base = init_params(config, jax.random.key(0))
  adapters = init_lora(config, jax.random.key(1))
  # Nonzero B, so the adapters are on the path of the loss (step 0 is not the reference).
  adapters = jax.tree_util.tree_map_with_path(
      lambda p, x: 0.05 * jax.random.normal(jax.random.key(2), x.shape)
      if p[-1].key == "b" else x, adapters)
  start = jax.device_get(adapters)
  tx = make_optimizer(SGD)
  single, metrics = make_train_step(_dpo(config))(
      TrainState.create(_copy(adapters), tx, 0, base_params=_copy(base)), batch)

  layout = config.replace(scan_layers=scan)
  convert = (lambda t: stack_layers(t, config.num_layers)) if scan else (lambda t: t)
  mesh = make_mesh(MESH)
  sharded_base = shard_params(convert(_copy(base)), mesh)
  sharded_adapters = shard_params(convert(_copy(adapters)), mesh)
  assert _spans_8(sharded_base)
  state = TrainState.create(sharded_adapters, tx, 0, base_params=sharded_base)
  sharded, sharded_metrics = make_train_step(_dpo(layout))(
      state, shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh))
  assert abs(float(sharded_metrics["loss"]) - float(metrics["loss"])) < 1e-5
  got = unstack_layers(sharded.params, config.num_layers) if scan else sharded.params
  assert _max_diff(got, single.params) < 1e-5
  assert _max_diff(single.params, start) > 1e-4  # the step moved the adapters

"""Mesh and sharding helpers on one process with 8 CPU devices (tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxalign.parallel import (MeshConfig, batch_sharding, make_mesh, on_mesh, param_spec,
                               replicated, resolve_axis_sizes, shard_batch, shard_global_batch,
                               shard_params, to_host)

needs_8 = pytest.mark.skipif(jax.device_count() < 8,
                             reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")


@pytest.mark.parametrize("config, devices, sizes", [
    (MeshConfig(), 8, (8, 1, 1)),
    (MeshConfig(data=-1, fsdp=4), 8, (2, 4, 1)),
    (MeshConfig(data=2, fsdp=-1), 8, (2, 4, 1)),
    (MeshConfig(data=1, fsdp=8), 8, (1, 8, 1)),
    (MeshConfig(data=2, fsdp=2, tensor=2), 8, (2, 2, 2)),
    (MeshConfig(), 1, (1, 1, 1)),
])
def test_resolve_axis_sizes(config, devices, sizes):
  assert resolve_axis_sizes(config, devices) == sizes


@pytest.mark.parametrize("config, devices, fragment", [
    (MeshConfig(data=-1, fsdp=-1), 8, "at most one"),
    (MeshConfig(data=-1, fsdp=3), 8, "do not split"),
    (MeshConfig(data=2, fsdp=2), 8, "needs 4 devices, 8 are present"),
])
def test_resolve_axis_sizes_errors(config, devices, fragment):
  with pytest.raises(ValueError, match=fragment):
    resolve_axis_sizes(config, devices)


@needs_8
def test_mesh_axes_are_auto():
  mesh = make_mesh(MeshConfig(data=2, fsdp=4))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert mesh.axis_types == (AxisType.Auto,) * 3


def test_param_spec():
  assert param_spec((64, 256), 1) == PartitionSpec()
  assert param_spec((64, 256), 4) == PartitionSpec(None, "fsdp")   # largest divisible dim
  assert param_spec((256, 6), 4) == PartitionSpec("fsdp", None)
  assert param_spec((6, 10), 4) == PartitionSpec()                 # small: replicated
  assert param_spec((4096,), 8) == PartitionSpec("fsdp")
  assert param_spec((1023, 5), 2) == PartitionSpec()               # nothing divisible


def _batch(rows=16):
  rng = np.random.default_rng(0)
  return {"tokens": rng.integers(0, 100, (rows, 12)).astype(np.int32),
          "weights": rng.random(rows).astype(np.float32)}


@needs_8
@pytest.mark.parametrize("config", [MeshConfig(data=8), MeshConfig(data=2, fsdp=4),
                                    MeshConfig(data=1, fsdp=8)])
def test_batches_split_rows_over_data_and_fsdp(config):
  mesh = make_mesh(config)
  batch = _batch()
  for place in (shard_batch, shard_global_batch):
    placed = place(batch, mesh)
    assert placed["tokens"].sharding == batch_sharding(mesh, 2)
    assert placed["weights"].sharding == batch_sharding(mesh, 1)
    # Every device holds 2 distinct rows (16 rows over 8 devices), in order.
    shards = sorted(placed["tokens"].addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape[0] for s in shards] == [2] * 8
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]),
                                  batch["tokens"])
    np.testing.assert_array_equal(to_host(placed)["weights"], batch["weights"])


@needs_8
def test_to_host_gathers_sharded_and_replicated_leaves():
  mesh = make_mesh(MeshConfig(data=1, fsdp=8))
  params = {"w": np.arange(64 * 32, dtype=np.float32).reshape(64, 32),
            "b": np.arange(3, dtype=np.float32)}
  placed = shard_params(params, mesh)
  assert placed["w"].sharding.spec == PartitionSpec("fsdp", None)
  host = to_host({"params": placed, "scalar": jax.jit(jnp.sum)(placed["w"])})
  assert isinstance(host["params"]["w"], np.ndarray)
  np.testing.assert_array_equal(host["params"]["w"], params["w"])
  np.testing.assert_array_equal(host["params"]["b"], params["b"])
  assert float(host["scalar"]) == float(params["w"].sum())


@needs_8
def test_on_mesh_keeps_sharded_leaves_and_replicates_the_rest():
  mesh = make_mesh(MeshConfig(data=2, fsdp=4))
  sharded = shard_params({"w": np.ones((64, 32), np.float32)}, mesh)["w"]
  tree = on_mesh({"w": sharded, "step": jnp.zeros((), jnp.int32),
                  "key": jax.random.PRNGKey(0)}, mesh)
  assert tree["w"] is sharded
  assert tree["step"].sharding == replicated(mesh)
  assert isinstance(tree["key"].sharding, NamedSharding)
  assert tree["key"].sharding.mesh == mesh


@pytest.mark.parametrize("mesh_config", [MeshConfig(data=2, fsdp=4),
                                         MeshConfig(data=2, fsdp=2, tensor=2)],
                         ids=["data2-fsdp4", "data2-fsdp2-tensor2"])
def test_load_pretrained_places_each_tensor_on_its_shards(hf_model_dirs, mesh_config):
  import numpy as np
  from jaxalign.models import Transformer, load_pretrained
  from jaxalign.parallel import make_mesh, mesh_param_spec, param_placer
  if jax.device_count() < 8:
    pytest.skip("needs 8 host devices")
  mesh = make_mesh(mesh_config)
  config, sharded = load_pretrained(hf_model_dirs["llama"], place=param_placer(mesh))
  _, plain = load_pretrained(hf_model_dirs["llama"])
  embed = sharded["embed"]
  assert embed.sharding.mesh == mesh and "fsdp" in str(embed.sharding.spec)
  # The loader passes each tensor's path: the placer applies the same path rules as
  # shard_params (tensor=2: Megatron's layout).
  for path, x in jax.tree_util.tree_leaves_with_path(sharded):
    assert x.sharding.spec == mesh_param_spec(path, x.shape, mesh), jax.tree_util.keystr(path)
  if mesh_config.tensor > 1:
    assert sharded["layers_0"]["attn"]["q_proj"]["kernel"].sharding.spec == PartitionSpec(
        "fsdp", "tensor")
    assert sharded["layers_0"]["mlp"]["down_proj"]["kernel"].sharding.spec == PartitionSpec(
        "tensor", "fsdp")
  tokens = np.arange(3, 13)[None]
  np.testing.assert_allclose(Transformer(config).apply({"params": sharded}, tokens),
                             Transformer(config).apply({"params": plain}, tokens), atol=1e-5)

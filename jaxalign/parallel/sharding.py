"""Sharding rules: params FSDP-sharded over their largest divisible dim, batches over
(data x fsdp), everything else replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign.parallel.mesh import BATCH_AXES


def param_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2 ** 10) -> PartitionSpec:
  """Shards the largest dim divisible by ``fsdp_size`` over 'fsdp'; small or indivisible
  tensors (norm scales, biases below ``min_size`` elements) stay replicated."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return PartitionSpec()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      return PartitionSpec(*["fsdp" if i == dim else None for i in range(len(shape))])
  return PartitionSpec()


def param_shardings(params, mesh: Mesh):
  """A pytree of NamedShardings matching ``params`` (arrays or ShapeDtypeStructs)."""
  size = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, param_spec(x.shape, size)), params)


def param_placer(mesh: Mesh):
  """``host array -> array sharded by the param rules``: for loaders that place tensors one
  at a time, so no device ever holds a whole unsharded model."""
  size = mesh.shape["fsdp"]

  def place(x):
    x = np.asarray(x)
    sharding = NamedSharding(mesh, param_spec(x.shape, size))
    # Each process builds only the shards its own devices hold (multi-host safe).
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return place


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dim over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard_params(params, mesh: Mesh):
  return jax.device_put(params, param_shardings(params, mesh))


def shard_batch(batch, mesh: Mesh):
  """Places a host batch (pytree of arrays whose leading dim is the global batch) on the
  mesh. Multi-process: each process passes its own rows (its slice of the global batch),
  assembled with ``make_array_from_process_local_data``."""
  def place(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim) if x.ndim else replicated(mesh)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree_util.tree_map(place, batch)


def shard_global_batch(batch, mesh: Mesh):
  """Places a batch that every process holds in full (the same GLOBAL rows on each host,
  e.g. an eval batch) on the mesh; each process copies only the rows its devices own, so
  row ``i`` of the result is row ``i`` of ``batch`` whatever the device order."""
  def place(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim) if x.ndim else replicated(mesh)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree_util.tree_map(place, batch)


def to_host(tree):
  """``jax.device_get`` that also works for arrays spanning several processes: a leaf
  whose shards live on other hosts is gathered (leaf by leaf, so the extra device memory
  is one leaf) and every process gets the full numpy value. Collective: in a multi-process
  run every process must call it with the same tree."""
  from jax.experimental import multihost_utils

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)
  return jax.tree_util.tree_map(get, tree)


def on_mesh(tree, mesh: Mesh):
  """Every leaf on ``mesh``: leaves already sharded over it stay; the rest (step counters,
  PRNG keys, optimizer scalars) are replicated, so jit sees one device set."""
  def place(x):
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
      return x
    return jax.device_put(x, replicated(mesh))
  return jax.tree_util.tree_map(place, tree)

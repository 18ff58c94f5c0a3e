"""Sharding rules: params over 'fsdp' and 'tensor', batches over (data x fsdp), everything
else replicated.

Params: a path-aware rule table (``TENSOR_RULES``) gives each Megatron-style layer the dim it
splits over 'tensor' (column-parallel q/k/v, gate/up and their biases; row-parallel o_proj
and down_proj; vocab-parallel embedding and LM head); then 'fsdp' goes on the largest other
dim that divides. A dim that 'tensor' does not divide is replicated over 'tensor' (never an
error). With ``tensor = 1`` this is the shape-only FSDP rule: the largest divisible dim. The
layer axis of stacked layers (``model.scan_layers``) is never split.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign.parallel.mesh import BATCH_AXES

# Megatron-LM's layout (Shoeybi et al. 2019), keyed on the end of a param's path (the module
# and param names, e.g. ``layers_3/attn/q_proj/kernel`` ends in ``q_proj/kernel``): the dim
# split over 'tensor'. Kernels are ``[in, out]``. Column-parallel layers split their outputs
# (and biases) so the activation between a column- and a row-parallel layer stays split;
# row-parallel layers split their inputs and all-reduce their outputs (their biases, added
# after the reduction, are replicated); the embedding and LM head split the vocabulary.
# Anything not listed (norms, row biases, ``pos_embed``, reward / value heads) is replicated
# over 'tensor'. The same names under a prefix (``backbone/``, ``policy/``) match.
# Stacked layers (``model.scan_layers``: ``layers/attn/q_proj/kernel`` [L, D, N*H]) carry a
# leading layer axis: the rule's dim shifts by one, and that axis is never split (the scan
# reads one layer per step; splitting L over fsdp would gather whole layers on one device).
COLUMN, ROW, VOCAB = -1, 0, 0
STACKED_LAYERS = "layers"  # the scanned blocks' subtree (models/layer_stack.py)
TENSOR_RULES: dict[str, int] = {
    **{f"{name}/kernel": COLUMN for name in ("q_proj", "k_proj", "v_proj", "gate_proj",
                                             "up_proj")},
    **{f"{name}/bias": COLUMN for name in ("q_proj", "k_proj", "v_proj", "gate_proj",
                                           "up_proj")},
    "o_proj/kernel": ROW, "down_proj/kernel": ROW,
    "embed": VOCAB, "lm_head": VOCAB,
}


def _names(path) -> tuple[str, ...]:
  """A param path as names: a tuple of strings as is, or a pytree key path
  (``DictKey`` / ``GetAttrKey`` / ``SequenceKey`` entries)."""
  if isinstance(path, str):
    return tuple(path.split("/"))
  names = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        entry = getattr(entry, attr)
        break
    names.append(str(entry))
  return tuple(names)


def is_stacked(path) -> bool:
  """Whether the param at ``path`` lies in the stacked layers (its dim 0 is the layer)."""
  return STACKED_LAYERS in _names(path)[:-1]


def tensor_dim(path, ndim: int) -> int | None:
  """The dim of a param at ``path`` that ``TENSOR_RULES`` splits over 'tensor' (None: none).
  The longest matching suffix of the path wins; under stacked layers the rule's dims count
  after the leading layer axis."""
  names = _names(path)
  for length in range(min(len(names), 2), 0, -1):
    dim = TENSOR_RULES.get("/".join(names[-length:]))
    if dim is not None:
      if not ndim:
        return None
      if is_stacked(path):
        return 1 + dim % (ndim - 1) if ndim > 1 else None
      return dim % ndim
  return None


def param_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2 ** 10, *,
               path=(), tensor_size: int = 1) -> PartitionSpec:
  """The PartitionSpec of a param of ``shape`` at ``path`` (names or a key path).

  'tensor' (``tensor_size > 1``): on the dim ``TENSOR_RULES`` names for the path, when
  ``tensor_size`` divides it (else replicated over 'tensor'). 'fsdp': on the largest other
  dim divisible by ``fsdp_size``; small tensors (fewer than ``min_size`` elements: norm
  scales, biases) and indivisible ones stay replicated over 'fsdp'. Without a path or with
  ``tensor_size = 1`` this is the plain FSDP rule. The leading layer axis of a param in the
  stacked layers (``is_stacked``) is never split."""
  spec: list = [None] * len(shape)
  if tensor_size > 1:
    dim = tensor_dim(path, len(shape))
    if dim is not None and shape[dim] % tensor_size == 0:
      spec[dim] = "tensor"
  if fsdp_size > 1 and int(np.prod(shape, dtype=np.int64)) >= min_size:
    first = 1 if is_stacked(path) else 0
    for dim in sorted(range(first, len(shape)), key=lambda d: -shape[d]):
      if spec[dim] is None and shape[dim] % fsdp_size == 0:
        spec[dim] = "fsdp"
        break
  return PartitionSpec(*spec) if any(s is not None for s in spec) else PartitionSpec()


def mesh_param_spec(path, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """``param_spec`` at the mesh's fsdp and tensor sizes: the one rule every placer uses."""
  return param_spec(tuple(shape), mesh.shape["fsdp"], path=path,
                    tensor_size=mesh.shape["tensor"])


def param_shardings(params, mesh: Mesh):
  """A pytree of NamedShardings matching ``params`` (arrays or ShapeDtypeStructs); each
  leaf's spec comes from its path (``mesh_param_spec``)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, mesh_param_spec(path, x.shape, mesh)), params)


def param_placer(mesh: Mesh):
  """``(host array, path) -> array sharded by the param rules``: for loaders that place
  tensors one at a time, so no device ever holds a whole unsharded model. ``path`` is the
  param's path in the tree (a tuple of names, e.g. ``("layers_0", "attn", "q_proj",
  "kernel")``); without it only the shape-only FSDP rule applies."""

  def place(x, path=()):
    x = np.asarray(x)
    sharding = NamedSharding(mesh, mesh_param_spec(path, x.shape, mesh))
    # Each process builds only the shards its own devices hold (multi-host safe).
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return place


def _tensor_mesh(like):
  """The (abstract) mesh a traced ``like`` lives on when its 'tensor' axis is > 1, else
  None (concrete values, no mesh, tensor = 1)."""
  if not isinstance(like, jax.core.Tracer):
    return None
  mesh = getattr(jax.typeof(like).sharding, "mesh", None)
  if mesh is None or mesh.empty or dict(mesh.shape).get("tensor", 1) == 1:
    return None
  return mesh


def constrain_residual(x, like):
  """``x`` (the residual stream ``[B, T, D]``) pinned to rows over (data x fsdp) and the
  rest replicated, on the mesh that ``like`` (a param) lives on: a hint for tensor-parallel
  meshes, where XLA otherwise keeps the batch over 'data' only and splits the residual's D
  over 'fsdp', all-reducing ``[B, T, mlp_dim]`` activations instead of all-gathering
  weights. A no-op outside jit (``like`` concrete), without a mesh, or with tensor = 1, so
  data / FSDP programs are unchanged; a batch the axes do not divide is still correct."""
  mesh = _tensor_mesh(like)
  if mesh is None:
    return x
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  spec = PartitionSpec(axes or None, *([None] * (x.ndim - 1)))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def constrain_embedding(embed):
  """The ``[V, D]`` table for a lookup on a tensor-parallel mesh: V over 'tensor', D
  gathered (an FSDP all-gather of the table, as any FSDP matmul does with its weight), so
  the lookup is Megatron's masked local lookup + an all-reduce over 'tensor' (XLA cannot
  partition a gather whose operand is split over both axes and replicates the table). A
  no-op outside jit, without a mesh or with tensor = 1."""
  mesh = _tensor_mesh(embed)
  if mesh is None:
    return embed
  spec = PartitionSpec("tensor" if embed.shape[0] % mesh.shape["tensor"] == 0 else None, None)
  return jax.lax.with_sharding_constraint(embed, NamedSharding(mesh, spec))


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

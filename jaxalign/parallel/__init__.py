"""Device mesh, sharding rules and multi-host start-up."""

from jaxalign.parallel.distributed import (distributed_settings, initialize_distributed,
                                           is_main_process)
from jaxalign.parallel.mesh import AXES, BATCH_AXES, MeshConfig, make_mesh, resolve_axis_sizes
from jaxalign.parallel.sharding import (TENSOR_RULES, batch_sharding, constrain_embedding,
                                        constrain_residual,
                                        mesh_param_spec, on_mesh, param_placer,
                                        param_shardings, param_spec, replicated, shard_batch,
                                        shard_global_batch, shard_params, tensor_dim, to_host)

__all__ = ["AXES", "BATCH_AXES", "MeshConfig", "TENSOR_RULES", "batch_sharding",
           "constrain_embedding", "constrain_residual", "distributed_settings",
           "initialize_distributed", "is_main_process", "make_mesh",
           "mesh_param_spec", "on_mesh", "param_placer", "param_shardings", "param_spec",
           "replicated", "resolve_axis_sizes", "shard_batch", "shard_global_batch",
           "shard_params", "tensor_dim", "to_host"]

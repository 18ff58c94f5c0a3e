"""The device mesh: named axes (data, fsdp, tensor) over every device, Auto axis types.

One code path from one CPU to a pod: a 1-device mesh is just a mesh whose axes have size 1.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Axis sizes; -1 on one axis takes every device the others leave."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1


def resolve_axis_sizes(config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
  sizes = [config.data, config.fsdp, config.tensor]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {config}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if free:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices do not split over fixed axes of size {known}")
    sizes[free[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"{num_devices} are present")
  return tuple(sizes)


def batch_shards(mesh) -> int:
  """How many ways a batch's rows are split: the product of the mesh's BATCH_AXES sizes
  (1 without a mesh)."""
  return 1 if mesh is None else int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def make_mesh(config: MeshConfig | None = None, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over ``devices`` (default: all, across every process)."""
  config = config or MeshConfig()
  devices = devices if devices is not None else jax.devices()
  sizes = resolve_axis_sizes(config, len(devices))
  return jax.make_mesh(sizes, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)

"""Multi-host start-up: ``jax.distributed.initialize`` from config or environment.

Call ``initialize_distributed()`` once, before anything touches devices. Resolution order:
explicit arguments, then ``JAXALIGN_COORDINATOR_ADDRESS`` / ``JAXALIGN_NUM_PROCESSES`` /
``JAXALIGN_PROCESS_ID`` (all three or none); on Cloud TPU with none of these set,
``jax.distributed.initialize()`` auto-detects the pod. A single process with nothing set
does nothing. ``JAXALIGN_CPU_COLLECTIVES=gloo`` (or ``cpu_collectives="gloo"``) turns on
cross-process collectives for CPU devices, so several CPU processes on one machine can
share a mesh (how the multi-process tests run).
"""

from __future__ import annotations

import os

import jax

_ENV = ("JAXALIGN_COORDINATOR_ADDRESS", "JAXALIGN_NUM_PROCESSES", "JAXALIGN_PROCESS_ID")
_CPU_COLLECTIVES_ENV = "JAXALIGN_CPU_COLLECTIVES"
_initialized = False


def _on_cloud_tpu() -> bool:
  """TPU environment variables (GKE and some images set them) or, on a plain TPU VM where an
  ssh shell has none, TPU chips on the PCI bus (the check JAX itself makes at start-up; it
  reads /sys and touches no backend)."""
  if (os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
      or os.environ.get("TPU_ACCELERATOR_TYPE")):
    return True
  try:
    from jax._src import hardware_utils
    chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
  except Exception:  # a private helper: if it moves, fall back to the variables above
    return False
  return chips > 0


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None


def distributed_settings(coordinator_address: str | None = None,
                         num_processes: int | None = None,
                         process_id: int | None = None) -> tuple[str, int, int] | None:
  """(coordinator, num_processes, process_id) from the arguments, else the environment;
  None when none of the three is given anywhere. Partial settings raise a ``ValueError``
  naming what is missing."""
  coordinator_address = coordinator_address or os.environ.get(_ENV[0], "").strip() or None
  if num_processes is None:
    num_processes = _env_int(_ENV[1])
  if process_id is None:
    process_id = _env_int(_ENV[2])
  values = (coordinator_address, num_processes, process_id)
  if all(v is None for v in values):
    return None
  missing = [name for name, v in zip(_ENV, values) if v is None]
  if missing:
    given = [name for name, v in zip(_ENV, values) if v is not None]
    raise ValueError(f"multi-process start-up needs all of {', '.join(_ENV)}: "
                     f"{', '.join(given)} set but {', '.join(missing)} missing")
  if num_processes < 1:
    raise ValueError(f"{_ENV[1]} must be >= 1, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"{_ENV[2]}={process_id} is not in [0, {_ENV[1]}={num_processes})")
  return coordinator_address, num_processes, process_id


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           cpu_collectives: str | None = None) -> bool:
  """Joins this process to the others; returns True when running multi-process.

  ``cpu_collectives="gloo"`` (default: ``$JAXALIGN_CPU_COLLECTIVES``) enables cross-process
  collectives for CPU devices; it is applied before ``jax.distributed.initialize``.
  """
  global _initialized
  if _initialized:
    return jax.process_count() > 1
  settings = distributed_settings(coordinator_address, num_processes, process_id)
  cpu_collectives = cpu_collectives or os.environ.get(_CPU_COLLECTIVES_ENV, "").strip() or None
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if settings is not None:
    address, count, index = settings
    jax.distributed.initialize(address, num_processes=count, process_id=index)
  elif _on_cloud_tpu():
    jax.distributed.initialize()
  else:
    return False
  _initialized = True
  return jax.process_count() > 1


def is_main_process() -> bool:
  """Process 0 writes logs, progress bars and metric files."""
  return jax.process_index() == 0

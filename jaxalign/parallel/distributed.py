"""Multi-host start-up: ``jax.distributed.initialize`` from config or environment.

Call ``initialize_distributed()`` once, before anything touches devices. Resolution order:
explicit arguments, then ``JAXALIGN_COORDINATOR_ADDRESS`` / ``JAXALIGN_NUM_PROCESSES`` /
``JAXALIGN_PROCESS_ID``; on Cloud TPU with none of these set, ``jax.distributed.initialize()``
auto-detects the pod. A single process with nothing set does nothing.
"""

from __future__ import annotations

import os

import jax

_ENV = ("JAXALIGN_COORDINATOR_ADDRESS", "JAXALIGN_NUM_PROCESSES", "JAXALIGN_PROCESS_ID")
_initialized = False


def _on_cloud_tpu() -> bool:
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
              or os.environ.get("TPU_ACCELERATOR_TYPE"))


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           cpu_collectives: str | None = None) -> bool:
  """Joins this process to the others; returns True when running multi-process.

  ``cpu_collectives="gloo"`` enables cross-process collectives for CPU devices (tests).
  """
  global _initialized
  if _initialized:
    return jax.process_count() > 1
  coordinator_address = coordinator_address or os.environ.get(_ENV[0])
  if num_processes is None and os.environ.get(_ENV[1]):
    num_processes = int(os.environ[_ENV[1]])
  if process_id is None and os.environ.get(_ENV[2]):
    process_id = int(os.environ[_ENV[2]])
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError(f"{_ENV[0]} is set; {_ENV[1]} and {_ENV[2]} must be set too")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif _on_cloud_tpu():
    jax.distributed.initialize()
  else:
    return False
  _initialized = True
  return jax.process_count() > 1


def is_main_process() -> bool:
  """Process 0 writes logs, progress bars and metric files."""
  return jax.process_index() == 0

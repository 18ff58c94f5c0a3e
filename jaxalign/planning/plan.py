"""``plan(run, topology)``: the run's programs compiled for a topology, and their memory."""

from __future__ import annotations

import math

from jaxalign.config import RunConfig
from jaxalign.planning import abstract as A
from jaxalign.planning.chips import hbm_bytes, parse_topology, topology_devices
from jaxalign.planning.memory import program_memory
from jaxalign.planning.programs import run_programs
from jaxalign.planning.suggest import suggestions


def _model_summary(config, policy) -> dict:
  leaves = __import__("jax").tree_util.tree_leaves(policy)
  return {"model_type": config.model_type,
          "num_params": int(sum(math.prod(x.shape) for x in leaves)),
          "num_layers": config.num_layers, "embed_dim": config.embed_dim,
          "vocab_size": config.vocab_size, "param_dtype": str(config.param_dtype),
          "compute_dtype": str(config.dtype), "remat": bool(config.remat),
          "scan_layers": bool(config.scan_layers),
          "lora_rank": config.lora.rank if config.lora is not None else 0}


def plan(run: RunConfig, topology: str, hbm_gib: float | None = None, log=None) -> dict:
  """The report (a JSON-able dict) of ``run`` on ``topology`` (``chips.parse_topology``).
  ``log(line)`` hears about each compile as it starts (they can take minutes)."""
  from jaxalign.parallel import make_mesh
  parsed = parse_topology(topology)
  hbm = hbm_bytes(parsed, hbm_gib)
  devices = topology_devices(parsed)
  mesh = make_mesh(run.mesh, devices=devices)
  config = A.policy_config(run)
  policy = A.abstract_params(config)
  built = run_programs(run, config, policy, mesh)
  resident = {k: A.device_bytes(v) for k, v in built.resident.items()}
  reports = []
  for program in built.programs:
    if log:
      log(f"compiling {program.name} for {parsed.text}...")
    reports.append(program_memory(program, resident, hbm))
  fits = None if hbm is None else all(r["fits"] for r in reports)
  return {"task": run.task, "topology": parsed.text, "platform": parsed.platform,
          "label": parsed.label, "num_devices": len(devices), "mesh": dict(mesh.shape),
          "hbm_bytes_per_device": hbm, "model": _model_summary(config, policy),
          "long_lived_bytes": resident, "programs": reports, "fits": fits,
          "notes": built.notes,
          "suggestions": [] if fits in (None, True) else suggestions(run, config, mesh)}

"""What to change when a plan does not fit: each suggestion a concrete ``--set`` list.

Ordered by what usually frees the most for a fine-tune: more FSDP (params, optimizer state,
reference and reward model all shard over it), bf16 params, LoRA (optimizer state of the
adapters only, no reference copy), rematerialisation and micro-batches (temporaries).
"""

from __future__ import annotations

from jaxalign.config import RunConfig
from jaxalign.config.schema import LORA_TASKS


def _batch_rows(run: RunConfig) -> int:
  if run.task == "ppo":
    return run.ppo.rollout_batch_size // run.ppo.num_minibatches
  if run.task in ("grpo", "rloo"):
    return run.grpo.prompts_per_iteration * run.grpo.group_size // run.grpo.num_minibatches
  return run.data.batch_size


def suggestions(run: RunConfig, config, mesh) -> list[dict]:
  """``[{"set": ["key=value", ...], "why": str}]`` for a plan that does not fit."""
  out = []
  devices = mesh.devices.size
  fsdp, tensor = mesh.shape["fsdp"], mesh.shape["tensor"]
  shards = mesh.shape["data"] * fsdp
  if fsdp * tensor < devices:
    out.append({"set": ["mesh.data=1", f"mesh.fsdp={devices // tensor}"],
                "why": "shard params, optimizer state and reference over every device"})
  if run.model.param_dtype == "float32":
    out.append({"set": ["model.param_dtype=bfloat16", "model.compute_dtype=bfloat16"],
                "why": "half the bytes of params, optimizer state and reference"})
  if run.task in LORA_TASKS and config.lora is None:
    out.append({"set": ["model.lora.rank=16"],
                "why": "LoRA: optimizer state for the adapters only; the frozen base is "
                       "the reference (no copy)"})
  if not run.model.remat:
    out.append({"set": ["model.remat=true"],
                "why": "recompute each block in the backward pass: fewer temporaries"})
  micro = run.loop.micro_batches * 2
  if _batch_rows(run) % (micro * shards) == 0:
    out.append({"set": [f"loop.micro_batches={micro}"],
                "why": "activations of 1/{} of the batch at a time".format(micro)})
  return out

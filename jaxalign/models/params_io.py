"""jaxalign's own model folders: ``jaxalign_config.json`` + ``params.safetensors``.

Any param tree (a policy, a reward model with its score head, a policy with a value head)
round-trips exactly, in its own dtype. For a Hugging Face folder use ``save_pretrained``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from jaxalign.models.config import RopeScaling, TransformerConfig
from jaxalign.models.hf_config import CheckpointError

CONFIG_FILE, PARAMS_FILE = "jaxalign_config.json", "params.safetensors"


def save_model(path: str, config: TransformerConfig, params, kind: str = "policy") -> None:
  """Writes ``config`` and ``params`` (keys are '/'-joined tree paths)."""
  os.makedirs(path, exist_ok=True)
  flat = {"/".join(str(p.key) for p in kp): np.asarray(jax.device_get(v))
          for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  save_file(flat, os.path.join(path, PARAMS_FILE))
  with open(os.path.join(path, CONFIG_FILE), "w") as f:
    json.dump({"kind": kind, "config": dataclasses.asdict(config)}, f, indent=2)


def load_model(path: str, place=None) -> tuple[TransformerConfig, dict, str]:
  """Reads a folder written by ``save_model``: ``(config, params, kind)``; ``place`` puts
  each host array on devices (default ``jnp.asarray``), as in ``load_pretrained``."""
  config_path, params_path = os.path.join(path, CONFIG_FILE), os.path.join(path, PARAMS_FILE)
  for file in (config_path, params_path):
    if not os.path.exists(file):
      raise CheckpointError(f"{file}: not found (is {path} a jaxalign model folder?)")
  with open(config_path) as f:
    meta = json.load(f)
  fields = dict(meta["config"])
  if fields.get("rope_scaling"):
    fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
  config = TransformerConfig(**fields)
  params: dict = {}
  for key, value in load_file(params_path).items():
    node = params
    parts = key.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = (place or jnp.asarray)(value)
  return config, params, meta.get("kind", "policy")

"""jaxalign's own model folders: ``jaxalign_config.json`` + ``params.safetensors``.

Any param tree (a policy, a reward model with its score head, a policy with a value head)
round-trips exactly, in its own dtype and layer layout (the config records ``scan_layers``:
stacked ``layers/...`` [L, ...] or one ``layers_i/...`` per layer; ``load_model`` converts
when asked for the other). For a Hugging Face folder use ``save_pretrained``.
``jaxalign_config.json`` also records the folder's tokenizer (``"tokenizer"``: ``{"kind":
"hf"}`` with the tokenizer files copied next to it, ``{"kind": "bytes"}`` or ``{"kind":
"synthetic", "vocab_size": N}``; see ``jaxalign.training.tokenizers``).
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
from jaxalign.models.layer_stack import to_layout

CONFIG_FILE, PARAMS_FILE = "jaxalign_config.json", "params.safetensors"


def save_model(path: str, config: TransformerConfig, params, kind: str = "policy",
               tokenizer: dict | None = None) -> None:
  """Writes ``config`` and ``params`` (keys are '/'-joined tree paths); ``tokenizer`` is the
  record of the folder's tokenizer (written as is)."""
  os.makedirs(path, exist_ok=True)
  flat = {"/".join(str(p.key) for p in kp): np.asarray(jax.device_get(v))
          for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  save_file(flat, os.path.join(path, PARAMS_FILE))
  with open(os.path.join(path, CONFIG_FILE), "w") as f:
    meta = {"kind": kind, "config": dataclasses.asdict(config)}
    if tokenizer is not None:
      meta["tokenizer"] = tokenizer
    json.dump(meta, f, indent=2)


def read_model_meta(path: str) -> tuple[TransformerConfig, str, dict]:
  """``(config, kind, meta)`` of a folder written by ``save_model``, without its params
  (``meta`` is the whole ``jaxalign_config.json``)."""
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(config_path):
    raise CheckpointError(f"{config_path}: not found (is {path} a jaxalign model folder?)")
  with open(config_path) as f:
    meta = json.load(f)
  fields = dict(meta["config"])
  if fields.get("rope_scaling"):
    fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
  return TransformerConfig(**fields), meta.get("kind", "policy"), meta


def load_model(path: str, place=None,
               scan_layers: bool | None = None) -> tuple[TransformerConfig, dict, str]:
  """Reads a folder written by ``save_model``: ``(config, params, kind)``; ``place(array,
  path)`` puts each host array on devices (default ``jnp.asarray``), as in
  ``load_pretrained``. ``scan_layers`` True / False returns that layer layout (converted on
  the host when the folder holds the other; the config says which); None: the folder's."""
  config, kind, _ = read_model_meta(path)
  params_path = os.path.join(path, PARAMS_FILE)
  if not os.path.exists(params_path):
    raise CheckpointError(f"{params_path}: not found (is {path} a jaxalign model folder?)")
  host: dict = {}
  for key, value in load_file(params_path).items():
    node = host
    parts = key.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  if scan_layers is not None and scan_layers != config.scan_layers:
    host = to_layout(host, config.num_layers, scan_layers)
    config = config.replace(scan_layers=scan_layers)
  place = place or (lambda x, parts: jnp.asarray(x))
  params = jax.tree_util.tree_map_with_path(
      lambda kp, v: place(v, tuple(str(p.key) for p in kp)), host)
  return config, params, kind

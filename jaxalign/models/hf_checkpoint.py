"""Read and write Hugging Face checkpoint folders (config.json + safetensors), offline.

``load_pretrained(path)`` builds the whole param tree in memory before returning, so an error
(missing tensor, wrong shape, unknown model type, no weights) raises ``CheckpointError``
naming the file and the key, and nothing half-loaded escapes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxalign.models.config import TransformerConfig
from jaxalign.models.hf_config import CheckpointError, config_from_hf, config_to_hf
from jaxalign.models.layer_stack import has_stacked_layers, stack_layers, unstack_layers

log = logging.getLogger(__name__)
_IGNORED_SUFFIXES = ("attn.bias", "attn.masked_bias", "rotary_emb.inv_freq")
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"

# One entry per tensor: (our path, HF key, layout). "linear": HF [out, in] -> ours [in, out];
# "conv1d": GPT-2 Conv1D, already [in, out]; "same": copied as is.
_Entry = tuple[tuple[str, ...], str, str]


def _gpt2_entries(c: TransformerConfig) -> Iterator[_Entry]:
  yield ("embed",), "transformer.wte.weight", "same"
  yield ("pos_embed",), "transformer.wpe.weight", "same"
  for i in range(c.num_layers):
    ours, hf = f"layers_{i}", f"transformer.h.{i}"
    for norm, hf_norm in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
      yield (ours, norm, "scale"), f"{hf}.{hf_norm}.weight", "same"
      yield (ours, norm, "bias"), f"{hf}.{hf_norm}.bias", "same"
    yield (ours, "attn", "qkv"), f"{hf}.attn.c_attn", "fused_qkv"
    yield (ours, "attn", "o_proj", "kernel"), f"{hf}.attn.c_proj.weight", "conv1d"
    yield (ours, "attn", "o_proj", "bias"), f"{hf}.attn.c_proj.bias", "same"
    yield (ours, "mlp", "up_proj", "kernel"), f"{hf}.mlp.c_fc.weight", "conv1d"
    yield (ours, "mlp", "up_proj", "bias"), f"{hf}.mlp.c_fc.bias", "same"
    yield (ours, "mlp", "down_proj", "kernel"), f"{hf}.mlp.c_proj.weight", "conv1d"
    yield (ours, "mlp", "down_proj", "bias"), f"{hf}.mlp.c_proj.bias", "same"
  yield ("final_norm", "scale"), "transformer.ln_f.weight", "same"
  yield ("final_norm", "bias"), "transformer.ln_f.bias", "same"
  if not c.tie_embeddings:
    yield ("lm_head",), "lm_head.weight", "same"


# Our norms -> transformers' names. Gemma's post_attention_layernorm is the attention output's
# norm (our post_attn_norm); Llama's is the MLP input's (our mlp_norm).
_PRE_NORMS = (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"))
_POST_NORMS = (("attn_norm", "input_layernorm"), ("post_attn_norm", "post_attention_layernorm"),
               ("mlp_norm", "pre_feedforward_layernorm"),
               ("post_mlp_norm", "post_feedforward_layernorm"))


def _llama_entries(c: TransformerConfig) -> Iterator[_Entry]:
  """Llama, Mistral, Qwen2/3 and Gemma 2/3 (same layout; Gemma adds norms, norm scales are
  stored zero-centred as transformers stores them)."""
  yield ("embed",), "model.embed_tokens.weight", "same"
  for i in range(c.num_layers):
    ours, hf = f"layers_{i}", f"model.layers.{i}"
    for norm, hf_norm in (_POST_NORMS if c.post_norms else _PRE_NORMS):
      yield (ours, norm, "scale"), f"{hf}.{hf_norm}.weight", "same"
    if c.qk_norm:
      yield (ours, "attn", "q_norm", "scale"), f"{hf}.self_attn.q_norm.weight", "same"
      yield (ours, "attn", "k_norm", "scale"), f"{hf}.self_attn.k_norm.weight", "same"
    for proj, bias in (("q_proj", c.qkv_bias), ("k_proj", c.qkv_bias),
                       ("v_proj", c.qkv_bias), ("o_proj", c.out_bias)):
      yield (ours, "attn", proj, "kernel"), f"{hf}.self_attn.{proj}.weight", "linear"
      if bias:
        yield (ours, "attn", proj, "bias"), f"{hf}.self_attn.{proj}.bias", "same"
    for proj in ("gate_proj", "up_proj", "down_proj"):
      yield (ours, "mlp", proj, "kernel"), f"{hf}.mlp.{proj}.weight", "linear"
      if c.mlp_bias:
        yield (ours, "mlp", proj, "bias"), f"{hf}.mlp.{proj}.bias", "same"
  yield ("final_norm", "scale"), "model.norm.weight", "same"
  if not c.tie_embeddings:
    yield ("lm_head",), "lm_head.weight", "same"


def checkpoint_entries(config: TransformerConfig) -> list[_Entry]:
  """The tensor map between our param tree and a Hugging Face state dict."""
  entries = _gpt2_entries if config.model_type == "gpt2" else _llama_entries
  return list(entries(config))


class _TensorSource:
  """The tensors of a checkpoint folder, by key, with the file each one lives in."""

  def __init__(self, path: str):
    index_path, single_path = os.path.join(path, _INDEX), os.path.join(path, _SINGLE)
    if os.path.exists(index_path):
      with open(index_path) as f:
        weight_map = json.load(f).get("weight_map")
      if not weight_map:
        raise CheckpointError(f"{index_path}: key 'weight_map' is missing or empty")
      self.files = {k: os.path.join(path, v) for k, v in weight_map.items()}
    elif os.path.exists(single_path):
      with safe_open(single_path, framework="np") as f:
        self.files = {k: single_path for k in f.keys()}
    else:
      raise CheckpointError(f"{path}: no weights found (expected {_SINGLE} or {_INDEX})")
    self.used: set[str] = set()
    self._handles: dict[str, Any] = {}
    prefixed = any(k.startswith(("transformer.", "model.")) for k in self.files)
    keys = list(self.files)
    self._alias = {} if prefixed else {f"transformer.{k}": k for k in keys}

  def has(self, key: str) -> bool:
    return self._alias.get(key, key) in self.files

  def get(self, key: str) -> np.ndarray:
    real = self._alias.get(key, key)
    self.used.add(real)
    if real not in self.files:
      raise CheckpointError(f"missing tensor {key!r}: not in {sorted(set(self.files.values()))}")
    file = self.files[real]
    if not os.path.exists(file):
      raise CheckpointError(f"{file}: file listed in {_INDEX} for key {real!r} does not exist")
    if file not in self._handles:
      self._handles[file] = safe_open(file, framework="np")
    return self._handles[file].get_tensor(real)

  def file_of(self, key: str) -> str:
    return self.files.get(self._alias.get(key, key), "?")


def _expected_shapes(config: TransformerConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  from jaxalign.models.transformer import Transformer
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda t: Transformer(config).init(jax.random.key(0), t), tokens)
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  return {tuple(p.key for p in path): leaf.shape for path, leaf in flat}


def _check_shape(src, key, got, want):
  if tuple(got) != tuple(want):
    raise CheckpointError(f"{src.file_of(key)}: tensor {key!r} has shape {tuple(got)}, "
                          f"the config expects {tuple(want)}")


def _read_entries(config, src, shapes) -> dict[tuple[str, ...], np.ndarray]:
  flat = {}
  for ours, key, layout in checkpoint_entries(config):
    if layout == "fused_qkv":
      width = config.embed_dim
      for part in ("weight", "bias"):
        tensor = src.get(f"{key}.{part}")
        _check_shape(src, f"{key}.{part}", tensor.shape,
                     (width, 3 * width) if part == "weight" else (3 * width,))
        for proj, piece in zip(("q_proj", "k_proj", "v_proj"), np.split(tensor, 3, axis=-1)):
          flat[ours[:-1] + (proj, "kernel" if part == "weight" else "bias")] = piece
      continue
    tensor = src.get(key)
    if layout == "linear":
      tensor = tensor.T
    _check_shape(src, key, tensor.shape, shapes[ours])
    flat[ours] = tensor
  return flat


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = value
  return tree


def read_hf_config(path: str) -> dict:
  """The parsed config.json of a Hugging Face folder (a clear error when missing or bad)."""
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointError(f"{config_path}: not found")
  with open(config_path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise CheckpointError(f"{config_path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def load_pretrained(path: str, dtype: str | None = None, compute_dtype: str | None = None,
                    place=None, **config_overrides) -> tuple[TransformerConfig, dict]:
  """Loads a local Hugging Face checkpoint folder; returns ``(config, params)``.

  Args:
    path: folder with ``config.json`` and ``model.safetensors`` or a sharded
      ``model.safetensors.index.json``. model_type gpt2, llama, mistral, qwen2, qwen3,
      gemma2 or gemma3_text.
    dtype: the params' dtype (default float32); ``compute_dtype`` defaults to it.
    place: ``(host array, path) -> device array``, called once per tensor with its path in
      the param tree (a tuple of names; default: ``jnp.asarray`` on the default device).
      ``jaxalign.parallel.param_placer(mesh)`` puts each tensor straight onto its shards,
      so a model larger than one device's memory loads.
    config_overrides: TransformerConfig fields set on the result; ``scan_layers=True``
      returns the stacked layout (the layers are stacked on the host, before ``place``).
  """
  config_path = os.path.join(path, "config.json")
  hf = read_hf_config(path)
  dtype = dtype or "float32"
  config = config_from_hf(hf, where=config_path, param_dtype=dtype,
                          dtype=compute_dtype or dtype, **config_overrides)
  src = _TensorSource(path)
  unrolled = config.replace(scan_layers=False)  # the checkpoint's layout: one key per layer
  flat = _read_entries(unrolled, src, _expected_shapes(unrolled))
  unused = sorted(k for k in set(src.files) - src.used
                  if not k.endswith(_IGNORED_SUFFIXES) and k != "lm_head.weight")
  if unused:
    log.warning("%s: %d tensors not used by a %s model: %s", path, len(unused),
                config.model_type, ", ".join(unused[:8]))
  np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
  place = place or (lambda x, path: jnp.asarray(x))
  host = _unflatten({k: v.astype(np_dtype) for k, v in flat.items()})
  if config.scan_layers:
    host = stack_layers(host, config.num_layers)
  params = jax.tree_util.tree_map_with_path(
      lambda kp, v: place(v, tuple(p.key for p in kp)), host)
  return config, params


def save_pretrained(config: TransformerConfig, params: dict, path: str) -> None:
  """Writes ``config.json`` and ``model.safetensors`` that transformers loads back."""
  os.makedirs(path, exist_ok=True)
  save_file(hf_tensors(config, params), os.path.join(path, _SINGLE), metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config_to_hf(config), f, indent=2)


def hf_tensors(config: TransformerConfig, params: dict,
               skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """Our param tree as a Hugging Face state dict (HF keys -> arrays); entries whose HF key is
  in ``skip`` (e.g. "lm_head.weight" for a reward model's backbone) are left out. Stacked
  params (``scan_layers``) are unstacked: the folder has one key per layer either way."""
  params = jax.tree_util.tree_map(np.asarray, params)
  if has_stacked_layers(params):
    params = unstack_layers(params, config.num_layers)
  flat = {tuple(p.key for p in kp): v
          for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  tensors = {}
  for ours, key, layout in checkpoint_entries(config):
    if key in skip:
      continue
    if layout == "fused_qkv":
      attn = ours[:-1]
      for part, leaf in (("weight", "kernel"), ("bias", "bias")):
        tensors[f"{key}.{part}"] = np.concatenate(
            [flat[attn + (p, leaf)] for p in ("q_proj", "k_proj", "v_proj")], axis=-1)
      continue
    if ours not in flat:
      raise KeyError(f"params have no entry {'/'.join(ours)} needed for {key!r}")
    tensor = flat[ours]
    tensors[key] = np.ascontiguousarray(tensor.T if layout == "linear" else tensor)
  return tensors

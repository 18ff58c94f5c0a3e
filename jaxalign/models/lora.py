"""LoRA adapters: a pure pytree beside the frozen base params.

``Transformer(config).apply({"params": base, "lora": adapters}, ...)`` runs the model with
adapters (``config.lora`` set); ``apply({"params": base}, ...)`` runs the base alone, which
is the reference of DPO / PPO / GRPO: no second copy of the weights. The adapter tree
mirrors the param paths of its projections: ``{"layers_0": {"attn": {"q_proj": {"a": [D, r],
"b": [r, N*H]}}}, ...}``.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxalign.models.config import TransformerConfig
from jaxalign.models.init import count_params
from jaxalign.models.layer_stack import stack_layers
from jaxalign.models.transformer import Transformer


def init_lora(config: TransformerConfig, rng: jax.Array) -> dict:
  """Fresh adapters for ``config.lora``: A random (PEFT's uniform(+-1/sqrt(in))), B zeros,
  so the adapted model equals the base at step 0. The base's own init is dead code in the
  jitted function (only the "lora" collection is returned). Under ``scan_layers`` the
  unrolled init is stacked (as ``init_params``): a seed gives the same adapters either way."""
  if config.lora is None:
    raise ValueError("init_lora needs config.lora")
  tokens = jnp.zeros((1, 1), jnp.int32)
  unrolled = config.replace(scan_layers=False)
  adapters = jax.jit(lambda key: Transformer(unrolled).init(key, tokens)["lora"])(rng)
  return stack_layers(adapters, config.num_layers) if config.scan_layers else adapters


def merge_lora(config: TransformerConfig, base: dict, adapters: dict) -> dict:
  """The base params with each adapted kernel replaced by ``W + A B * alpha / rank``
  (computed in float32, stored in the kernel's dtype); the other tensors are shared."""
  scale = config.lora.scale

  def merge(params, lora):
    if "a" in lora and "b" in lora:
      kernel = params["kernel"]
      # matmul: [in, r] @ [r, out], or [L, in, r] @ [L, r, out] per layer when stacked.
      delta = jnp.matmul(lora["a"].astype(jnp.float32), lora["b"].astype(jnp.float32)) * scale
      return dict(params, kernel=(kernel.astype(jnp.float32) + delta).astype(kernel.dtype))
    return dict(params, **{k: merge(params[k], v) for k, v in lora.items()})

  return merge(base, adapters)


def lora_param_count(adapters) -> int:
  """The number of trainable adapter scalars."""
  return count_params(adapters)


@flax.struct.dataclass
class LoraParams:
  """The policy of a LoRA run: the frozen ``base`` params and the trained ``adapters``; the
  training passes read it as ``{"params": base, "lora": adapters}`` (``model_variables``)."""

  base: Any
  adapters: Any


def bind_lora(params, base, entry: str | None = None):
  """``LoraParams(base, params)``, or with ``entry`` (``"policy"`` of the online trainers'
  ``{"policy": adapters, "value": ...}``) that entry bound and the rest as is."""
  if entry is None:
    return LoraParams(base, params)
  return {**params, entry: LoraParams(base, params[entry])}


def model_variables(params) -> dict:
  """Flax variables of ``params``: a plain param tree, or ``LoraParams`` (base + adapters)."""
  if isinstance(params, LoraParams):
    return {"params": params.base, "lora": params.adapters}
  return {"params": params}


def base_params(params):
  """The base param tree of ``params`` (itself when it is a plain tree)."""
  return params.base if isinstance(params, LoraParams) else params

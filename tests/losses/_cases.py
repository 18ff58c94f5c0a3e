"""Every loss with random inputs, for the generic checks (jit, gradients, numerics, padding).

A case names the loss, builds its differentiable float inputs (``floats``) and its fixed
inputs (``fixed``: masks, labels, knobs), and says how padding is added: ``"rows"`` (extra
pairs with weight 0) or ``"columns"`` (extra tokens with mask 0).
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxalign import losses

B, T = 3, 5


@dataclasses.dataclass
class Case:
  name: str
  loss_fn: Callable
  floats: dict
  fixed: dict
  padding: str  # "rows" or "columns"

  def __call__(self, **floats):
    return self.loss_fn(**floats, **self.fixed)


def _pair_logps(key, scale, dtype, names):
  keys = jax.random.split(key, len(names))
  return {name: -jnp.abs(jax.random.normal(k, (B,), dtype)) * scale - 1.0
          for name, k in zip(names, keys)}


def _token_arrays(key, scale, dtype, names):
  keys = jax.random.split(key, len(names))
  return {name: jax.random.normal(k, (B, T), dtype) * scale for name, k in zip(names, keys)}


MASK = jnp.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]])
PAIR = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def make_cases(scale: float = 3.0, dtype=jnp.float32, seed: int = 0) -> list[Case]:
  """All losses. ``scale`` sets the size of log-prob gaps (1e3 for the numerics checks)."""
  key = jax.random.key(seed)
  pair = lambda: _pair_logps(key, scale, dtype, PAIR)
  token = lambda names: _token_arrays(key, scale, dtype, names)
  averaged = lambda: _pair_logps(key, scale / 3, dtype, PAIR[:2])  # per-token averages
  p = functools.partial
  return [
      Case("sft", losses.sft_loss, {"token_logps": -jnp.abs(token(["x"])["x"])},
           {"loss_mask": MASK}, "columns"),
      Case("bradley_terry", p(losses.bradley_terry_loss, center_rewards_coefficient=0.01),
           _pair_logps(key, scale, dtype, ("chosen_rewards", "rejected_rewards")),
           {"margin": jnp.array([0.0, 0.5, 1.0])}, "rows"),
      Case("dpo", p(losses.dpo_loss, beta=0.1), pair(), {}, "rows"),
      Case("cdpo", p(losses.dpo_loss, beta=0.1, label_smoothing=0.2), pair(), {}, "rows"),
      Case("robust_dpo", p(losses.robust_dpo_loss, beta=0.1), pair(), {}, "rows"),
      Case("ipo", p(losses.ipo_loss, beta=0.5), pair(),
           {"chosen_lengths": jnp.array([3, 1, 4]), "rejected_lengths": jnp.array([2, 5, 1])},
           "rows"),
      Case("hinge", p(losses.hinge_loss, beta=0.05), pair(), {}, "rows"),
      Case("simpo", p(losses.simpo_loss, beta=2.0, gamma=0.5), averaged(), {}, "rows"),
      Case("orpo", p(losses.orpo_loss, beta=0.1), {**averaged(), "nll_loss": jnp.ones((), dtype)},
           {}, "rows"),
      Case("kto", p(losses.kto_loss, beta=0.1, undesirable_weight=1.5),
           _pair_logps(key, scale, dtype, ("logps", "ref_logps")),
           {"desirable": jnp.array([True, False, True]), "reference_kl": 0.3}, "rows"),
      Case("ppo_policy", p(losses.ppo_policy_loss, clip_eps=0.2),
           {"logps": -jnp.abs(token(["l"])["l"])},
           {"old_logps": -jnp.abs(token(["o"])["o"]) * 1.1, "advantages": token(["a"])["a"],
            "mask": MASK}, "columns"),
      Case("ppo_policy_dual_clip", p(losses.ppo_policy_loss, clip_eps=0.2, dual_clip=3.0),
           {"logps": -jnp.abs(token(["l"])["l"])},
           {"old_logps": -jnp.abs(token(["o"])["o"]) * 1.1, "advantages": token(["a"])["a"],
            "mask": MASK}, "columns"),
      Case("ppo_value", p(losses.ppo_value_loss, clip_eps=0.2), {"values": token(["v"])["v"]},
           {"old_values": token(["w"])["w"], "returns": token(["r"])["r"], "mask": MASK},
           "columns"),
      Case("entropy_bonus", losses.entropy_bonus, {"entropies": jnp.abs(token(["e"])["e"])},
           {"mask": MASK}, "columns"),
  ]


def pad(case: Case, extra: int = 2, garbage: float = 777.0) -> Case:
  """The same case with ``extra`` padded pairs (weight 0) or tokens (mask 0) of garbage."""
  def pad_array(name, x):
    x = jnp.asarray(x)
    if case.padding == "rows" and x.ndim == 1:
      fill = jnp.full((extra,), garbage if x.dtype != bool else True, x.dtype)
      return jnp.concatenate([x, fill])
    if case.padding == "columns" and x.ndim == 2:
      fill = 0 if "mask" in name else garbage
      return jnp.concatenate([x, jnp.full((x.shape[0], extra), fill, x.dtype)], axis=1)
    return x

  floats = {name: pad_array(name, x) for name, x in case.floats.items()}
  fixed = {name: pad_array(name, x) for name, x in case.fixed.items()}
  if case.padding == "rows":
    fixed["weights"] = jnp.concatenate([jnp.ones(B), jnp.zeros(extra)])
  return dataclasses.replace(case, floats=floats, fixed=fixed)

"""Weighted sums of reward functions that keep each component's values for logging.

``reward = combine({"correct": (1.0, exact_match_ids), "format": (0.1, token_format(...))})``

- ``reward(prompts, completions, **fields)`` is itself a reward function: the total
  ``r_b = sum_i w_i r_i,b`` float32 [B] (so combinations nest);
- ``out = reward.evaluate(prompts, completions, **fields)`` is a :class:`RewardOutput`
  ``(total, components)``: ``total`` [B] and ``components = {name: r_i [B]}`` (unweighted);
  ``out.metrics()`` gives ``{"rewards/<name>/mean", "rewards/<name>/std"}`` per component
  plus ``rewards/total/mean`` and ``/std`` (population std, over the batch);
- a component may return NaN for samples it does not apply to: it then adds nothing to
  their total (``nansum``, as TRL) and is left out of its mean / std.

Each component gets the inputs it wants (text or ids, ``rewards.base.call_reward``); text is
decoded once per call. A bare function stands for weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from jaxalign.rewards.base import RewardInputs


class RewardOutput(NamedTuple):
  total: np.ndarray  # [B] float32
  components: dict[str, np.ndarray]  # name -> [B] float32, unweighted

  def metrics(self, prefix: str = "rewards/") -> dict[str, float]:
    """Mean and (population) std over the batch of each component and of the total."""
    out = {}
    for name, values in {**self.components, "total": self.total}.items():
      finite = values[~np.isnan(values)]
      out[f"{prefix}{name}/mean"] = float(finite.mean()) if finite.size else math.nan
      out[f"{prefix}{name}/std"] = float(finite.std()) if finite.size else math.nan
    return out


class CombinedReward:
  """``sum_i w_i r_i`` over named reward functions (module docstring)."""

  reward_inputs = "any"

  def __init__(self, components: Mapping):
    if not components:
      raise ValueError("combine needs at least one reward function")
    self.weights: dict[str, float] = {}
    self.functions: dict[str, object] = {}
    for name, entry in components.items():
      if not callable(entry) and not (isinstance(entry, tuple) and len(entry) == 2):
        raise ValueError(f"reward {name!r}: expected a function or (weight, function), got "
                         f"{entry!r}")
      weight, fn = (1.0, entry) if callable(entry) else entry
      if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"reward names must be non-empty strings without '/', got {name!r}")
      if not callable(fn) or not math.isfinite(float(weight)):
        raise ValueError(f"reward {name!r}: expected a function or (finite weight, "
                         f"function), got {entry!r}")
      self.weights[name], self.functions[name] = float(weight), fn

  def evaluate(self, prompts, completions, **fields) -> RewardOutput:
    inputs = RewardInputs(prompts, completions, fields)
    components = {name: inputs.call(fn) for name, fn in self.functions.items()}
    total = np.zeros(inputs.batch_size, np.float32)
    for name, values in components.items():
      total += np.float32(self.weights[name]) * np.nan_to_num(values, nan=0.0)
    return RewardOutput(total, components)

  def __call__(self, prompts, completions, **fields) -> np.ndarray:
    return self.evaluate(prompts, completions, **fields).total

  def __repr__(self) -> str:
    parts = ", ".join(f"{n}: {w:g}" for n, w in self.weights.items())
    return f"combine({{{parts}}})"


def combine(components: Mapping) -> CombinedReward:
  """``{name: (weight, fn) or fn}`` -> a :class:`CombinedReward` (module docstring)."""
  return CombinedReward(components)

"""Optimisers from config: AdamW (or Adam / SGD), warmup + decay schedules, clipping."""

from __future__ import annotations

import dataclasses
from typing import Literal

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: Literal["adamw", "adam", "sgd"] = "adamw"
  learning_rate: float = 1e-4
  schedule: Literal["constant", "linear", "cosine"] = "constant"
  warmup_steps: int = 0
  total_steps: int | None = None  # decay horizon for linear / cosine; None: loop.steps
  end_learning_rate_ratio: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  grad_clip: float | None = 1.0  # global-norm clip; None = off


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  peak, end = config.learning_rate, config.learning_rate * config.end_learning_rate_ratio
  if config.total_steps is None and config.schedule != "constant":
    raise ValueError(f"optimizer.total_steps is needed for schedule={config.schedule} "
                     f"(jaxalign train sets it to loop.steps when it is not given)")
  decay_steps = max((config.total_steps or 1) - config.warmup_steps, 1)
  if config.schedule == "constant":
    decay = optax.constant_schedule(peak)
  elif config.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_learning_rate_ratio)
  else:
    raise ValueError(f"unknown schedule {config.schedule!r} (constant, linear, cosine)")
  if config.warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(config)
  if config.name == "adamw":
    core = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                       weight_decay=config.weight_decay)
  elif config.name == "adam":
    core = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
  elif config.name == "sgd":
    core = optax.sgd(schedule)
  else:
    raise ValueError(f"unknown optimizer {config.name!r} (adamw, adam, sgd)")
  if config.grad_clip is None:
    return core
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), core)

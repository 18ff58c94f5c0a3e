"""Training: state, objectives, jitted steps, the loop, optimizers and whole runs.

``from jaxalign.training import PreferenceObjective, make_train_step, fit, run_training``.
Names are imported lazily (module ``__getattr__``, PEP 562): ``jaxalign.config`` imports
``jaxalign.training.loop`` while ``jaxalign.training.runs`` imports ``jaxalign.config``, so an
eager ``__init__`` would make the two packages import each other half-built.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "state": ("TrainState",),
    "step": ("accumulate_gradients", "make_eval_step", "make_train_step",
             "split_micro_batches", "train_step"),
    "objectives": ("PreferenceObjective", "RewardModelObjective", "SFTObjective", "as_arrays",
                   "reference_logps_fn"),
    "loop": ("LoopConfig", "Throughput", "fit"),
    "optim": ("OptimizerConfig", "learning_rate_schedule", "make_optimizer"),
    "preference_losses": ("LOSS_DEFAULTS", "LOSS_NAMES", "loss_knobs", "preference_loss"),
    "metrics_log": ("MetricsLogger",),
    "runs": ("make_objective", "run_training"),
    "ppo": ("PPOObjective", "PPOSpec"),
    "ppo_run": ("run_ppo",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
  if name not in _MODULE_OF:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
  globals()[name] = value  # later look-ups skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))

"""Orbax checkpoints of the training state and the data iterator's position.

``Checkpointer(directory, save_every=N, keep=K)`` saves asynchronously every N steps and keeps
the last K; with ``best_metric`` it also keeps the single best checkpoint (by an eval metric)
under ``directory/best``. Saves happen on multiples of N (orbax's default policy would also save
the first step it sees: a full checkpoint at step 1), on ``force`` and when JAX's preemption
service reports a preemption (multi-host SIGTERM). ``meta`` (a small JSON dict, e.g. the
metrics log's length) travels with each checkpoint. ``restore`` puts the arrays onto whatever shardings the new run's
abstract state carries (another mesh shape is fine). Every process calls save and restore
(orbax coordinates them); paths may be local or ``gs://``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxalign.training.state import TrainState

_STATE_FIELDS = ("step", "params", "opt_state", "rng", "ref_params", "extras")


def state_to_tree(state: TrainState) -> dict:
  return {name: getattr(state, name) for name in _STATE_FIELDS
          if getattr(state, name) is not None}


def tree_to_state(tree: dict, like: TrainState) -> TrainState:
  return like.replace(**{name: tree[name] for name in _STATE_FIELDS if name in tree})


def abstract_tree(state: TrainState) -> dict:
  """ShapeDtypeStructs (with the live arrays' shardings) that restore targets."""
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_to_tree(state))


class Checkpointer:
  def __init__(self, directory: str, save_every: int = 100, keep: int = 3,
               best_metric: str | None = None, best_mode: str = "min",
               async_save: bool = True):
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.save_every = save_every
    self.best_metric = best_metric
    policies = ocp.checkpoint_managers
    decide = [policies.PreemptionCheckpointingPolicy()]  # save_every=0: forced saves only
    if save_every and save_every > 0:
      decide.append(policies.FixedIntervalPolicy(int(save_every)))
    decide = policies.AnySavePolicy(decide)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_decision_policy=decide,
                                           enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.best = None
    self.restored_meta: dict | None = None  # the ``meta`` of the last restored checkpoint
    if best_metric:
      best_options = ocp.CheckpointManagerOptions(
          max_to_keep=1, best_fn=lambda metrics: metrics[best_metric], best_mode=best_mode,
          enable_async_checkpointing=async_save, create=True)
      self.best = ocp.CheckpointManager(os.path.join(self.directory, "best"),
                                        options=best_options)

  @staticmethod
  def _args(state: TrainState, data_state: dict | None, meta: dict | None = None):
    items = {"state": ocp.args.StandardSave(state_to_tree(state))}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    if meta is not None:
      items["meta"] = ocp.args.JsonSave(meta)
    return ocp.args.Composite(**items)

  def save(self, step: int, state: TrainState, data_state: dict | None = None,
           force: bool = False, meta: dict | None = None) -> bool:
    """Saves when ``step`` is on the interval, on a preemption, or with ``force``; returns
    whether it did."""
    return self.manager.save(step, args=self._args(state, data_state, meta), force=force)

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once JAX's preemption service saw a
    preemption notice (multi-host); False on one process."""
    return jax.process_count() > 1 and self.manager.reached_preemption(step)

  def save_if_best(self, step: int, state: TrainState, metrics: dict,
                   data_state: dict | None = None) -> None:
    if self.best is not None and self.best_metric in metrics:
      self.best.save(step, args=self._args(state, data_state),
                     metrics={self.best_metric: float(metrics[self.best_metric])}, force=True)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, like: TrainState, step: int | None = None,
              best: bool = False) -> tuple[TrainState, dict | None]:
    """Restores onto the shardings of ``like`` (a freshly initialised state of this run)."""
    manager = self.best if best else self.manager
    step = manager.best_step() if best else (step if step is not None else manager.latest_step())
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    items = {"state": ocp.args.StandardRestore(abstract_tree(like))}
    saved = manager.item_metadata(step)
    for name in ("data", "meta"):
      if name in saved:
        items[name] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    data = restored["data"] if "data" in items else None
    self.restored_meta = restored["meta"] if "meta" in items else None
    return tree_to_state(restored["state"], like), data

  def wait(self) -> None:
    self.manager.wait_until_finished()
    if self.best is not None:
      self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.manager.close()
    if self.best is not None:
      self.best.close()


def restore_or_init(checkpointer: Checkpointer | None, state: TrainState) -> tuple[TrainState, Any]:
  """Resumes from the latest checkpoint when there is one; else returns ``state``."""
  if checkpointer is None or checkpointer.latest_step() is None:
    return state, None
  return checkpointer.restore(state)

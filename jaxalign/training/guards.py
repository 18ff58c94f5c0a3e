"""Stopping a run cleanly: on a non-finite loss / gradient norm (the NaN guard), and on
Ctrl-C / SIGTERM (a checkpoint at the current step, then "interrupted at step N").

``NanGuard`` checks each step's ``loss`` and ``grad_norm`` one step late (so the host never
waits on the step it just dispatched) and synchronously before anything is saved or
evaluated; on a non-finite value it writes ``output_dir/nan_debug/`` (the metrics and the
offending host batch) and raises ``NonFiniteError``. Nothing is checkpointed after a
non-finite step, and ``params_finite`` is checked before every checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np

GUARDED = ("loss", "grad_norm")  # metric names (the last part of a key) that stop a run


class NonFiniteError(RuntimeError):
  """A non-finite loss, gradient norm or parameter: the run stopped (the CLI exits 3)."""


class Interrupted(Exception):
  """SIGINT / SIGTERM: a checkpoint was saved at ``step`` (the CLI exits 128 + signum)."""

  def __init__(self, signum: int, step: int | None, saved: bool, message: str | None = None):
    self.signum, self.step, self.saved = signum, step, saved
    if message is None:
      message = ("interrupted before training started" if step is None else
                 f"interrupted at step {step}; rerun to resume" if saved else
                 f"interrupted at step {step} (no checkpoint could be saved)")
    super().__init__(message)


def json_safe(value):
  """``value`` with every non-finite float replaced by None, so ``json.dump(...,
  allow_nan=False)`` writes strict JSON (NaN / Infinity are not JSON)."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def dump_json(value, path: str) -> None:
  with open(path, "w") as f:
    json.dump(json_safe(value), f, indent=2, allow_nan=False)


def first_non_finite(metrics: dict) -> tuple[str, float] | None:
  """(key, value) of the first guarded metric (``*loss``, ``*grad_norm``) that is not finite."""
  for key, value in metrics.items():
    if key.split("/")[-1].endswith(GUARDED):
      value = float(np.asarray(value))
      if not math.isfinite(value):
        return key, value
  return None


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def params_finite(params) -> bool:
  from jaxalign.parallel import to_host
  return bool(to_host(_all_finite(params)))


class NanGuard:
  """Checks step metrics for non-finite guarded values; ``directory``: the run's output_dir."""

  def __init__(self, directory: str | None, last_checkpoint=lambda: None):
    self.directory = directory
    self.last_checkpoint = last_checkpoint
    self._pending = None

  def hold(self, step: int, metrics, batch=None) -> None:
    """Remembers step ``step``'s (device) metrics and host batch, checked by ``check``."""
    self._pending = (step, metrics, batch)

  def check(self, logger=None) -> None:
    """Checks the held step (waiting for it); raises NonFiniteError when it diverged."""
    if self._pending is None:
      return
    step, metrics, batch = self._pending
    self._pending = None
    values = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()
              if np.ndim(v) == 0}
    bad = first_non_finite(values)
    if bad is not None:
      if logger is not None:
        logger.log(step, values, prefix="train/")
      self.fail(step, f"train/{bad[0]}", bad[1], values, batch)

  def check_metrics(self, step: int, metrics: dict, batch=None) -> None:
    """Checks host metrics (already floats, keys as logged) right away."""
    bad = first_non_finite(metrics)
    if bad is not None:
      self.fail(step, bad[0], bad[1], metrics, batch)

  def check_params(self, step: int, params) -> None:
    if not params_finite(params):
      self.fail(step, "params", math.nan, {}, None)

  def fail(self, step: int, key: str, value: float, metrics: dict, batch) -> None:
    where = self._write_debug(step, key, value, metrics, batch)
    last = self.last_checkpoint()
    kept = (f"the last good checkpoint is step {last}" if last is not None
            else "no checkpoint was saved")
    again = "--resume (from that checkpoint) or --overwrite" if last is not None else \
        "--overwrite"
    raise NonFiniteError(f"non-finite {key} ({value}) at step {step}: training stopped; "
                         f"{kept}{where}. Lower optimizer.learning_rate, check the data or "
                         f"set optimizer.grad_clip, then rerun with {again}")

  def _write_debug(self, step, key, value, metrics, batch) -> str:
    if not self.directory or jax.process_index() != 0:
      return ""
    folder = os.path.join(self.directory, "nan_debug")
    os.makedirs(folder, exist_ok=True)
    dump_json({"step": step, "metric": key, "value": repr(value),
               "metrics": {k: repr(float(v)) for k, v in metrics.items()}},
              os.path.join(folder, "info.json"))
    arrays = _host_arrays(batch)
    if arrays:
      np.savez(os.path.join(folder, "batch.npz"), **arrays)
    return f"; debug data in {folder}"


def _host_arrays(batch) -> dict:
  if batch is None:
    return {}
  if not isinstance(batch, dict):
    batch = getattr(batch, "_asdict", lambda: vars(batch) if hasattr(batch, "__dict__")
                    else {})()
  out = {}
  for key, value in batch.items():
    try:
      out[str(key)] = np.asarray(value)
    except Exception:  # noqa: BLE001 - debug output only: skip what is not an array
      continue
  return out


class StopSignals:
  """``with StopSignals() as stop``: once ``stop.install()`` ran (after
  ``jax.distributed`` is initialised: it needs ``jax.process_count()``), SIGINT and SIGTERM
  set ``stop.signum`` instead of killing the process; the loop checks ``stop.requested``
  after each step, checkpoints and raises ``Interrupted``. Before ``stop.armed`` is set (data
  building, compilation) a signal raises ``Interrupted`` at once (nothing to save yet). A
  second signal while stopping raises at once. Leaving the block restores the previous
  handlers. Only on the main thread of a single process (with several processes, SIGTERM is
  left to JAX's preemption service, see ``Checkpointer.reached_preemption``)."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = None
    self.armed = False
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      raise Interrupted(signum, None, False, "interrupted again while stopping: exited at "
                        "once (the last complete checkpoint is kept)")
    self.signum = signum
    if not self.armed:
      raise Interrupted(signum, None, False)

  def __enter__(self):
    return self

  def install(self) -> None:
    if self._previous or threading.current_thread() is not threading.main_thread():
      return
    if jax.process_count() == 1:
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    return False

"""The outer training loop: steps, periodic eval, logging with throughput, checkpoints."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator

import jax

from jaxalign.checkpoint import Checkpointer
from jaxalign.training.metrics_log import MetricsLogger


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  steps: int = 100
  micro_batches: int = 1
  log_every: int = 10
  eval_every: int = 0          # 0: only at the end
  checkpoint_every: int = 0    # 0: no checkpoints
  keep_checkpoints: int = 3
  best_metric: str | None = None  # e.g. "eval/loss": also keep the best checkpoint


@dataclasses.dataclass
class Throughput:
  """Tokens/s and achieved FLOP/s over the steps since the last log line."""

  tokens_per_batch: int = 0
  flops_per_batch: float = 0.0
  _start: float = dataclasses.field(default_factory=time.perf_counter)
  _steps: int = 0

  def tick(self) -> None:
    self._steps += 1

  def read(self) -> dict[str, float]:
    elapsed = max(time.perf_counter() - self._start, 1e-9)
    out = {"steps_per_s": self._steps / elapsed}
    if self.tokens_per_batch:
      out["tokens_per_s"] = self._steps * self.tokens_per_batch / elapsed
    if self.flops_per_batch:
      out["flops_per_s"] = self._steps * self.flops_per_batch / elapsed
    self._start, self._steps = time.perf_counter(), 0
    return out


def fit(state, step_fn: Callable, batches: Iterator, config: LoopConfig, *,
        place_batch: Callable = lambda b: b, evaluate: Callable | None = None,
        checkpointer: Checkpointer | None = None, logger: MetricsLogger | None = None,
        throughput: Throughput | None = None, before_step: Callable | None = None):
  """Runs ``step_fn`` from ``state.step`` to ``config.steps``; returns (state, last eval).

  ``batches`` yields host batches and may expose ``get_state()`` (saved with each
  checkpoint so a resumed run continues with the same data). ``evaluate(state)`` returns
  a dict of metrics (logged with an ``eval/`` prefix). ``before_step(state, step)`` may
  return a new state and metrics to log, e.g. after refreshing on-policy data.
  """
  throughput = throughput or Throughput()
  last_eval: dict = {}
  step = int(state.step)
  while step < config.steps:
    if before_step is not None:
      state, refresh_metrics = before_step(state, step)
      if logger and refresh_metrics:
        logger.log(step, refresh_metrics)
    state, metrics = step_fn(state, place_batch(next(batches)))
    step += 1
    throughput.tick()
    if logger and (step % config.log_every == 0 or step == config.steps):
      logger.log(step, dict(jax.device_get(metrics), **throughput.read()), prefix="train/")
    if evaluate and ((config.eval_every and step % config.eval_every == 0)
                     or step == config.steps):
      last_eval = {f"eval/{k}": v for k, v in evaluate(state).items()}
      if logger:
        logger.log(step, last_eval)
      if checkpointer:
        checkpointer.save_if_best(step, state, last_eval, _data_state(batches))
    if checkpointer and config.checkpoint_every:
      checkpointer.save(step, state, _data_state(batches), force=step == config.steps)
    if logger:
      logger.advance()
  if checkpointer:
    checkpointer.wait()
  return state, last_eval


def _data_state(batches):
  get_state = getattr(batches, "get_state", None)
  return get_state() if get_state else None

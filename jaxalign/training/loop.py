"""The outer training loop: steps, periodic eval, logging with throughput, checkpoints, the
NaN guard and clean stops on SIGINT / SIGTERM (``guards``)."""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Callable, Iterator

import jax

from jaxalign.checkpoint import Checkpointer
from jaxalign.training.guards import Interrupted, NanGuard, StopSignals
from jaxalign.training.metrics_log import MetricsLogger


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  steps: int = 100
  micro_batches: int = 1
  log_every: int = 10
  eval_every: int = 0          # 0: only at the end
  checkpoint_every: int | None = None  # None: auto (auto_checkpoint_every); 0: none
  keep_checkpoints: int = 3
  best_metric: str | None = None  # e.g. "eval/loss": also keep the best checkpoint


def auto_checkpoint_every(steps: int, multiple_of: int = 1) -> int:
  """The default cadence: a tenth of the run, between 50 and 500 steps (and never more than
  the run), rounded up to a multiple of ``multiple_of`` (online DPO's refresh_every)."""
  every = min(max(-(-steps // 10), 50), 500, max(steps, 1))
  return -(-every // multiple_of) * multiple_of


class StopEarly(Exception):
  """Raised by a ``before_step`` hook to end the run at the current step as a finished run
  (e.g. online DPO whose refresh formed too few pairs: ``online.on_few_pairs=stop``);
  ``metrics`` are logged at that step."""

  def __init__(self, message: str, metrics: dict | None = None):
    super().__init__(message)
    self.metrics = dict(metrics or {})


@dataclasses.dataclass
class Throughput:
  """Tokens/s and achieved FLOP/s over the steps since the last log line, on the time the
  steps take: the calls that compile a step for a batch shape not seen before (``compile``)
  and evaluations and checkpoints (``exclude``) are left out, so a packed run's new layout
  shapes or an eval do not read as a slow step. A window that compiled also reports
  ``compile_s`` (those calls' wall time, compiling and dispatch) and ``batch_shapes`` (the
  distinct shapes so far)."""

  tokens_per_batch: int = 0
  flops_per_batch: float = 0.0
  clock: Callable[[], float] = time.perf_counter
  _start: float | None = None
  _steps: int = 0
  _excluded: float = 0.0
  _compile: float = 0.0
  _shapes: set = dataclasses.field(default_factory=set)

  def __post_init__(self):
    self._start = self.clock()

  def tick(self) -> None:
    self._steps += 1

  def is_new_shape(self, batch) -> bool:
    """Whether ``batch``'s leaf shapes and dtypes are new to this run (recorded)."""
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    signature = tuple((jax.tree_util.keystr(path), tuple(getattr(x, "shape", ())),
                       str(getattr(x, "dtype", type(x).__name__))) for path, x in leaves)
    if signature in self._shapes:
      return False
    self._shapes.add(signature)
    return True

  def compile(self, seconds: float) -> None:
    self._compile += seconds

  def exclude(self, seconds: float) -> None:
    self._excluded += seconds

  def read(self) -> dict[str, float]:
    now = self.clock()
    elapsed = max(now - self._start - self._excluded - self._compile, 1e-9)
    out = {"steps_per_s": self._steps / elapsed}
    if self.tokens_per_batch:
      out["tokens_per_s"] = self._steps * self.tokens_per_batch / elapsed
    if self.flops_per_batch:
      out["flops_per_s"] = self._steps * self.flops_per_batch / elapsed
    if self._compile:
      out.update(compile_s=self._compile, batch_shapes=float(len(self._shapes)))
    self._start, self._steps, self._excluded, self._compile = now, 0, 0.0, 0.0
    return out


def fit(state, step_fn: Callable, batches: Iterator, config: LoopConfig, *,
        place_batch: Callable = lambda b: b, evaluate: Callable | None = None,
        checkpointer: Checkpointer | None = None, logger: MetricsLogger | None = None,
        throughput: Throughput | None = None, before_step: Callable | None = None,
        learning_rate: Callable | None = None, guard: NanGuard | None = None,
        stop: StopSignals | None = None):
  """Runs ``step_fn`` from ``state.step`` to ``config.steps``; returns (state, last eval).

  ``batches`` yields host batches and may expose ``get_state()`` (saved with each
  checkpoint so a resumed run continues with the same data). ``evaluate(state)`` returns
  a dict of metrics (logged with an ``eval/`` prefix). ``before_step(state, step)`` may
  return a new state and metrics to log, e.g. after refreshing on-policy data.
  ``learning_rate(count)`` (the optax schedule) is logged as ``train/learning_rate``.
  A ``before_step`` that raises ``StopEarly`` ends the run at that step: its metrics are
  logged, the state is evaluated (as at the last step) and ``fit`` returns it.

  The checkpointer saves every ``checkpointer.save_every`` steps (0: never) and at the last
  step. ``guard`` (a ``NanGuard``) stops the run with ``NonFiniteError`` at a non-finite loss
  or gradient norm, never checkpointing that state; with ``stop`` (active ``StopSignals``) a
  SIGINT / SIGTERM saves a checkpoint at the current step and raises ``Interrupted``.
  """
  throughput = throughput or Throughput()
  guard = guard or NanGuard(None)
  last_eval: dict = {}
  eval_step = -1
  stopped_early = False
  step = int(state.step)
  periodic = checkpointer is not None and bool(checkpointer.save_every)
  if stop is not None:
    stop.armed = True
  while step < config.steps:
    if before_step is not None:
      guard.check(logger)  # no refresh from a diverged state
      paused = throughput.clock()  # e.g. an online refresh: not the steps' time
      try:
        state, refresh_metrics = before_step(state, step)
      except StopEarly as stopped:
        if jax.process_index() == 0:
          print(f"stopping early at step {step}: {stopped}")
        if logger:
          logger.log(step, stopped.metrics)
        stopped_early = True
        break
      if logger and refresh_metrics:
        logger.log(step, refresh_metrics)
      guard.check_metrics(step, refresh_metrics or {})  # e.g. a retrained reward model's loss
      throughput.exclude(throughput.clock() - paused)
    batch = next(batches)
    placed = place_batch(batch)
    new_shape, started = throughput.is_new_shape(placed), throughput.clock()
    state, metrics = step_fn(state, placed)
    if new_shape:  # jit traced and compiled (or read the cache) inside the call
      throughput.compile(throughput.clock() - started)
    guard.check(logger)  # the previous step (done by now: this one is queued behind it)
    step += 1
    throughput.tick()
    guard.hold(step, metrics, batch)
    last = step == config.steps
    log_now = logger is not None and (step % config.log_every == 0 or last)
    eval_now = evaluate is not None and ((config.eval_every and step % config.eval_every == 0)
                                         or last)
    save_now = periodic and (step % checkpointer.save_every == 0 or last)
    interrupted = stop is not None and (stop.requested or (
        checkpointer is not None and checkpointer.reached_preemption(step)))
    if log_now or eval_now or save_now or interrupted:
      guard.check(logger)  # this step, before anything is logged, evaluated or saved
    if log_now:
      values = dict(jax.device_get(metrics), **throughput.read())
      if learning_rate is not None:
        values["learning_rate"] = float(learning_rate(step - 1))
      logger.log(step, values, prefix="train/")
    paused = throughput.clock()  # eval and checkpoints: not the steps' time
    if eval_now:
      last_eval = {f"eval/{k}": v for k, v in evaluate(state).items()}
      eval_step = step
      if logger and last_eval:  # an evaluator with nothing to measure logs no row
        logger.log(step, last_eval)
      if checkpointer:
        checkpointer.save_if_best(step, state, last_eval, _data_state(batches))
    if checkpointer is not None and (save_now or interrupted):
      guard.check_params(step, state.params)
      checkpointer.save(step, state, _data_state(batches), force=True,
                        meta={"metrics_offset": logger.offset if logger else None})
    throughput.exclude(throughput.clock() - paused)
    if logger:
      logger.advance()
    if interrupted:
      if checkpointer is not None:
        checkpointer.wait()
      raise Interrupted(stop.signum or signal.SIGTERM, step, checkpointer is not None)
  guard.check(logger)
  guard.check_params(step, state.params)
  if evaluate is not None and (not last_eval or (stopped_early and eval_step != step)):
    # resumed at the last step (nothing ran), or stopped early: evaluate the final state
    last_eval = {f"eval/{k}": v for k, v in evaluate(state).items()}
    if logger and stopped_early and last_eval:
      logger.log(step, last_eval)
  if checkpointer is not None and stopped_early and step > int(checkpointer.latest_step() or -1):
    guard.check_params(step, state.params)
    checkpointer.save(step, state, _data_state(batches), force=True,
                      meta={"metrics_offset": logger.offset if logger else None})
  if checkpointer:
    checkpointer.wait()
  return state, last_eval


def _data_state(batches):
  get_state = getattr(batches, "get_state", None)
  return get_state() if get_state else None

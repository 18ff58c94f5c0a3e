"""Logged throughput counts the steps' own time: compiling a new batch shape, evaluations and
refreshes are left out, and the compiles are reported (``compile_s``, ``batch_shapes``)."""

import dataclasses
import json

import numpy as np
import pytest

from jaxalign.training.loop import LoopConfig, Throughput, fit
from jaxalign.training.metrics_log import MetricsLogger


@dataclasses.dataclass
class State:
  step: int = 0
  params: dict = dataclasses.field(default_factory=dict)


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


def test_a_window_leaves_out_compiles_and_pauses():
  clock = FakeClock()
  throughput = Throughput(tokens_per_batch=100, flops_per_batch=1e6, clock=clock)
  for _ in range(4):
    throughput.tick()
  clock.now = 10.0
  throughput.compile(3.0)
  throughput.exclude(2.0)
  first = throughput.read()
  assert first["tokens_per_s"] == pytest.approx(4 * 100 / (10.0 - 3.0 - 2.0))
  assert first["flops_per_s"] == pytest.approx(4 * 1e6 / 5.0)
  assert first["compile_s"] == 3.0
  for _ in range(5):
    throughput.tick()
  clock.now = 20.0
  second = throughput.read()
  assert second["steps_per_s"] == pytest.approx(5 / 10.0)
  assert "compile_s" not in second  # nothing compiled in this window


def test_fit_reports_compiles_of_new_shapes_and_leaves_out_eval(tmp_path):
  """Six steps of 1 s over batches of two shapes (each first call compiles for 7 s more) and
  an evaluation of 100 s at step 3: the window's tokens/s is 6 steps over the 4 s of the
  steps that compiled nothing."""
  clock = FakeClock()
  widths = [8, 8, 16, 8, 8, 16]
  seen = set()

  def step_fn(state, batch):
    width = batch["tokens"].shape[1]
    if width not in seen:
      seen.add(width)
      clock.now += 7.0
    clock.now += 1.0
    return State(state.step + 1), {"loss": np.float32(0.0)}

  def evaluate(state):
    clock.now += 100.0
    return {"loss": 0.0}

  batches = iter([{"tokens": np.zeros((2, w), np.int32)} for w in widths])
  logger = MetricsLogger(str(tmp_path), total_steps=6, progress=False)
  throughput = Throughput(tokens_per_batch=10, clock=clock)
  state, _ = fit(State(), step_fn, batches, LoopConfig(steps=6, log_every=6, eval_every=3,
                                                           checkpoint_every=0),
                 evaluate=evaluate, logger=logger, throughput=throughput)
  logger.close()
  assert state.step == 6
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = next(row for row in rows if "train/tokens_per_s" in row)
  assert train["train/batch_shapes"] == 2
  assert train["train/compile_s"] == pytest.approx(2 * (7.0 + 1.0))
  assert train["train/tokens_per_s"] == pytest.approx(6 * 10 / 4.0)

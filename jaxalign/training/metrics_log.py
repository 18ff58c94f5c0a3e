"""Metrics to JSONL and TensorBoard, a progress bar with rate and ETA (or, without the bar,
one line on stdout per logged step); process 0 only. ``metrics.jsonl`` is strict JSON: a
non-finite value is written as null."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from jaxalign.training.guards import json_safe

# Metrics (the last part of a key) on the progress bar and the --no-progress log lines.
SHOWN = ("loss", "accuracies", "accuracy", "grad_norm", "learning_rate", "tokens_per_s", "kl",
         "compile_s", "score", "gold_reward")


def to_floats(metrics: dict) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in metrics.items()}


class MetricsLogger:
  """Writes ``metrics.jsonl`` and TensorBoard events under ``directory``; shows a tqdm bar.

  Only process 0 writes (metrics are already global means, reduced inside the step).
  """

  def __init__(self, directory: str | None, total_steps: int, start_step: int = 0,
               progress: bool = True, tensorboard: bool = True, description: str = "train"):
    self.active = jax.process_index() == 0
    self.directory = directory
    self.total_steps = total_steps
    self.print_lines = not progress
    self._file = self._writer = self._bar = None
    if not self.active:
      return
    if directory:
      os.makedirs(directory, exist_ok=True)
      self._file = open(os.path.join(directory, "metrics.jsonl"), "a")
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._writer = SummaryWriter(os.path.join(directory, "tensorboard"))
    if progress:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, desc=description,
                       dynamic_ncols=True, mininterval=1.0)

  def log(self, step: int, metrics: dict, prefix: str = "") -> dict[str, float]:
    values = {f"{prefix}{k}": v for k, v in to_floats(metrics).items()}
    if not self.active:
      return values
    if self._file:
      row = json_safe({"step": step, "time": time.time(), **values})
      self._file.write(json.dumps(row, allow_nan=False) + "\n")
      self._file.flush()
    if self._writer:
      for name, value in values.items():
        self._writer.add_scalar(name, value, step)
    if self._bar is not None:
      shown = {k: f"{v:.4g}" for k, v in values.items()
               if k.split("/")[-1] in ("loss", "accuracies", "accuracy", "tokens_per_s")}
      self._bar.set_postfix(shown, refresh=False)
    elif self.print_lines and format_line(step, self.total_steps, values):
      print(format_line(step, self.total_steps, values), flush=True)
    return values

  @property
  def offset(self) -> int | None:
    """Bytes written to metrics.jsonl so far (a resumed run truncates it back to this)."""
    return self._file.tell() if self._file else None

  def advance(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer:
      self._writer.close()
    if self._file:
      self._file.close()


def format_line(step: int, total: int, values: dict[str, float]) -> str:
  """``step 10/100  train/loss=0.6931 train/grad_norm=1.2 ...``: the shown metrics (every
  eval metric) of one logged step."""
  shown = {k: v for k, v in values.items()
           if k.startswith("eval/") or k.split("/")[-1] in SHOWN}
  if not shown:
    return ""
  return f"step {step}/{total}  " + " ".join(f"{k}={v:.4g}" for k, v in shown.items())


def truncate_log(directory: str, offset: int | None) -> None:
  """Cuts ``directory/metrics.jsonl`` back to ``offset`` bytes (the rows a checkpoint
  had seen), so a resumed run does not repeat steps."""
  path = os.path.join(directory, "metrics.jsonl")
  if offset is None or not os.path.exists(path) or jax.process_index() != 0:
    return
  if os.path.getsize(path) > offset:
    with open(path, "r+") as f:
      f.truncate(offset)

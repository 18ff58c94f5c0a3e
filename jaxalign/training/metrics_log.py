"""Metrics to JSONL and TensorBoard, a progress bar with rate and ETA; process 0 only."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


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
      self._file.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
      self._file.flush()
    if self._writer:
      for name, value in values.items():
        self._writer.add_scalar(name, value, step)
    if self._bar is not None:
      shown = {k: f"{v:.4g}" for k, v in values.items()
               if k.split("/")[-1] in ("loss", "accuracies", "accuracy", "tokens_per_s")}
      self._bar.set_postfix(shown, refresh=False)
    return values

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

"""How a run lays out its host batches before they go on the mesh: pairs in the shared-prompt
layout (``data.shared_prompt``), SFT rows and reward-model pairs packed (``data.packing``),
anything else as is.

Every layout gives the objective the same loss as the padded rows it replaces (tested). With
several processes, each holding its own rows, the layout's widths are the maximum over
processes, so the local batches assemble into one global array.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxalign.config import RunConfig
from jaxalign.config.validate import packs
from jaxalign.data.packing import packed_rows
from jaxalign.data.pair_layout import shared_prompt_pairs
from jaxalign.data.pair_packing import packed_pairs

Layout = Callable[[dict], dict]


def _global(widths: tuple[int, ...]) -> tuple[int, ...]:
  if jax.process_count() == 1:
    return widths
  gathered = multihost_utils.process_allgather(np.asarray(widths, np.int64))
  return tuple(int(w) for w in np.max(np.reshape(gathered, (-1, len(widths))), axis=0))


def shared_pairs(arrays: dict) -> dict:
  """Pair batches in the shared-prompt layout; other batches unchanged."""
  if "chosen_tokens" not in arrays:
    return arrays
  return shared_prompt_pairs(arrays, agree_widths=_global)


def packed_sft(row_multiple: int = 1) -> Layout:
  """SFT batches packed (``data.packing``), the packed row count a multiple of
  ``row_multiple`` (batch shards x micro-batches)."""
  def layout(arrays: dict) -> dict:
    if "loss_mask" not in arrays or "desirable" in arrays:
      return arrays
    return packed_rows(arrays, row_multiple, agree_widths=_global)
  return layout


def packed_rm(row_multiple: int = 1, share_prompt: bool = True) -> Layout:
  """Reward-model pair batches packed (``data.packing``), several pairs per row, each as its
  shared-prompt unit (or ``[chosen | rejected]`` with ``share_prompt=False``)."""
  def layout(arrays: dict) -> dict:
    if "chosen_tokens" not in arrays:
      return arrays
    return packed_pairs(arrays, row_multiple, share_prompt, agree_widths=_global)
  return layout


def identity(arrays: dict) -> dict:
  return arrays


def batch_layout(run: RunConfig, row_multiple: int = 1) -> Layout:
  """The run's layout: ``data.packing`` (on by default) for SFT and the reward model, else
  ``data.shared_prompt`` for pair tasks."""
  if run.task == "rm" and packs(run):
    return packed_rm(row_multiple, run.data.shared_prompt)
  if run.task in ("dpo", "rm", "online-dpo") and run.data.shared_prompt:
    return shared_pairs
  if run.task == "sft" and packs(run):
    return packed_sft(row_multiple)
  return identity

"""The batches a run's programs take, as sharded ShapeDtypeStructs at their largest shapes.

Offline steps: ``data.batch_size`` full-length rows (prompt ``data.max_prompt_length``, default
half of ``data.max_length``; the response the rest) built as the run's row type
(``SFTRows`` / ``PreferenceRows``), drawn by the run's ``BatchIterator``, wrapped in
``CachedReference`` when the reference is cached, and put through the run's
``batch_layout`` (shared-prompt pairs, packing): the keys and widths are the run's own.
Online programs: prompts of ``data.max_length - max_new_tokens`` tokens (the prompt budget)
and the rollout / experience the run's sampler and scorers return (``jax.eval_shape``).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxalign import data as D
from jaxalign.config import RunConfig
from jaxalign.parallel import batch_sharding, replicated
from jaxalign.parallel.mesh import batch_shards
from jaxalign.training.batch_layout import batch_layout
from jaxalign.training.dataset_pass import CachedReference
from jaxalign.training.objectives import as_arrays


def _ids(config) -> tuple[int, int, int, int]:
  """(pad, eos, content, other): four distinct ids of the vocabulary."""
  eos = config.eos_token_id if config.eos_token_id is not None else 1
  pad = 0 if eos != 0 else 1
  content, other = [t for t in range(4) if t not in (pad, eos)][:2]
  return pad, eos, content, other


def prompt_length(run: RunConfig) -> int:
  spec = run.data
  return spec.max_prompt_length or spec.max_length // 2


def full_rows(run: RunConfig, config, pairs: bool):
  """``data.batch_size`` rows of ``data.max_length`` tokens in the run's row type."""
  pad, eos, content, other = _ids(config)
  spec = run.data
  P = prompt_length(run)
  R = spec.max_length - P  # [response tokens..., EOS]
  n = spec.batch_size
  prompts = [[content] * P] * n
  response = [content] * (R - 1) + [eos]
  if not pairs:
    return D.SFTRows.from_token_lists(prompts, [response] * n, pad, eos, spec.max_length)
  rejected = [other] + [content] * (R - 2) + [eos]  # differs at the first response token
  return D.PreferenceRows.from_token_lists(prompts, [response] * n, [rejected] * n, pad, eos,
                                           spec.max_length)


def offline_batch(run: RunConfig, config, mesh, cached: bool) -> dict:
  """The host batch one step of ``runs.run_training`` gets (numpy), laid out as the run
  lays it out; with ``cached`` the reference log-probs ride along."""
  rows = full_rows(run, config, pairs=run.task != "sft")
  if cached:
    zeros = np.zeros(len(rows), np.float32)
    rows = CachedReference(rows, {"ref_chosen_logps": zeros, "ref_rejected_logps": zeros})
  batch = next(D.BatchIterator(rows, run.data.batch_size, seed=run.seed))
  arrays = {k: np.asarray(v) for k, v in as_arrays(batch).items()}
  layout = batch_layout(run, row_multiple=batch_shards(mesh) * run.loop.micro_batches)
  return layout(arrays)


def on_batch_axes(tree, mesh):
  """ShapeDtypeStructs of ``tree`` (arrays or structs) with rows over (data x fsdp), as
  ``shard_batch`` places them; scalars replicated."""
  def place(x):
    sharding = batch_sharding(mesh, x.ndim) if x.ndim else replicated(mesh)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree_util.tree_map(place, tree)


def online_prompt_length(run: RunConfig, config, max_new_tokens: int) -> int:
  """The prompt budget: ``data.max_length - max_new_tokens`` (the longest prompt a prompt
  file keeps), within the model's context."""
  budget = min(run.data.max_length, config.max_seq_len) - max_new_tokens
  return max(1, budget)


def prompt_batch(rows: int, P: int, mesh):
  """Left-padded prompts [rows, P] and their mask, as the sampler gets them (on the mesh)."""
  tokens = np.zeros((rows, P), np.int32)
  return on_batch_axes((tokens, np.ones((rows, P), np.int32)), mesh)


def padded_rows(rows: int, mesh) -> int:
  """``rows`` rounded up to the mesh's batch shards (online DPO pads its sampler batch)."""
  shards = batch_shards(mesh)
  return -(-rows // shards) * shards

"""Passes over every row of a dataset: the cached reference log-probs and held-out eval.

Both visit the rows in file order, ``batch_size`` at a time (``padded_batches``). A batch is
padded to the bucket of ITS longest row (``data.bucket_length`` over the default buckets, as
training batches are), so short data runs at its own length, not ``max_length``; the last
batch is filled up to ``batch_size`` rows by repeating rows with weight 0 and zeroed loss
masks (``pad_rows``), so there are few shapes and every row counts exactly once.

Eval is exact: its metrics are those of one batch holding every row, whatever
``eval_batch_size``. As gradient accumulation does for micro-batches, the objective's
``counts`` (else its ``denominators``) are summed over the batches first, then the statistics
of the whole set (KTO's reference point), and each batch's loss and metrics, computed
against those global counts, are summed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxalign.data import bucket_length, default_buckets
from jaxalign.parallel import shard_global_batch, to_host
from jaxalign.parallel.mesh import batch_shards
from jaxalign.training.metrics_log import to_floats
from jaxalign.training.objectives import as_arrays, at_least_one, reference_logps_fn

PROGRESS_MIN_BATCHES = 8  # a progress bar for reference passes at least this long


def pad_rows(arrays: dict, num_real: int) -> dict:
  """Rows ``num_real:`` of a batch become padding: weight 0 (a ``weights`` entry is added if
  there is none) and every ``*loss_mask`` zero, so no objective counts or scores them."""
  arrays = dict(arrays)
  size = next(iter(arrays.values())).shape[0]
  real = np.arange(size) < num_real  # [B]
  weights = arrays.get("weights")
  arrays["weights"] = (real.astype(np.float32) if weights is None
                       else np.where(real, weights, 0).astype(np.float32))
  for key, value in arrays.items():
    if key.endswith("loss_mask"):
      arrays[key] = np.where(real[:, None], value, 0).astype(value.dtype)
  return arrays


def batch_rows(size: int, num_rows: int, mesh=None) -> int:
  """The batch size of a pass: ``size``, at most ``num_rows``, rounded up to a multiple of
  the mesh's batch shards (padding rows fill the rest)."""
  shards = batch_shards(mesh)
  size = max(1, min(size, num_rows))
  return -(-size // shards) * shards


def padded_batches(rows, batch_size: int, buckets=None):
  """Yield ``(num_real, arrays)`` for consecutive slices of ``rows`` covering each row once;
  ``arrays`` is the batch as a dict of numpy arrays [batch_size, T], ``T`` the bucket of the
  slice's longest row, rows ``num_real:`` padding (``pad_rows``)."""
  buckets = tuple(buckets or default_buckets(rows.max_length))
  lengths = np.asarray(rows.lengths())
  for start in range(0, len(rows), batch_size):
    indices = np.arange(start, min(start + batch_size, len(rows)))
    length = bucket_length(int(lengths[indices].max()), buckets)
    padded = np.resize(indices, batch_size)  # static shape: repeats of the slice's rows
    arrays = {k: np.asarray(v) for k, v in as_arrays(rows.batch(padded, length)).items()}
    yield len(indices), pad_rows(arrays, len(indices))


class CachedReference:
  """Rows plus per-row reference arrays (``ref_chosen_logps``... or ``ref_logps``) computed
  once and attached to every batch they yield; other attributes are the rows' own (so a
  mixture's ``epoch_order`` still applies)."""

  def __init__(self, rows, arrays: dict[str, np.ndarray]):
    self.rows, self.arrays = rows, arrays
    self.max_length = rows.max_length

  def __len__(self):
    return len(self.rows)

  def __getattr__(self, name):
    if name in ("rows", "arrays"):
      raise AttributeError(name)
    return getattr(self.rows, name)

  def lengths(self):
    return self.rows.lengths()

  def batch(self, indices, length):
    arrays = {k: np.asarray(v) for k, v in as_arrays(self.rows.batch(indices, length)).items()}
    return dict(arrays, **{k: v[np.asarray(indices)] for k, v in self.arrays.items()})

  @property
  def chosen(self):  # the pair arrays under their former names
    return self.arrays["ref_chosen_logps"]

  @property
  def rejected(self):
    return self.arrays["ref_rejected_logps"]


@functools.lru_cache(maxsize=16)
def reference_fn(objective):
  """A jitted ``(ref_params, batch) -> {name: [B]}`` of the arrays a cached reference holds:
  ``objective.reference_arrays`` when it has one, else the pair log-probs."""
  if hasattr(objective, "reference_arrays"):
    return jax.jit(objective.reference_arrays)
  pair = reference_logps_fn(objective)
  return lambda ref_params, batch: dict(zip(("ref_chosen_logps", "ref_rejected_logps"),
                                            pair(ref_params, batch)))


def precompute_reference(objective, ref_params, rows, batch_size: int, mesh,
                         progress: bool = False, layout=None) -> CachedReference:
  """The reference's per-row arrays over every row (bucketed batches, module docstring),
  each batch in ``layout`` (``training.batch_layout``; rows stay rows) first."""
  layout = layout or (lambda arrays: arrays)
  compute = reference_fn(objective)
  size = batch_rows(batch_size, len(rows), mesh)
  num_batches = -(-len(rows) // size)
  bar = tqdm.tqdm(total=num_batches, desc="reference log-probs", unit="batch",
                  disable=not progress or num_batches < PROGRESS_MIN_BATCHES)
  parts: dict[str, list] = {}
  for num_real, arrays in padded_batches(rows, size):
    # Every process holds the whole global batch here (not its own rows), and every
    # process needs every row's log-probs (its later training rows may be any of them).
    outputs = to_host(compute(ref_params, shard_global_batch(layout(arrays), mesh)))
    for name, value in outputs.items():
      parts.setdefault(name, []).append(np.asarray(value)[:num_real])
    bar.update()
  bar.close()
  return CachedReference(rows, {k: np.concatenate(v) for k, v in parts.items()})


def _add(total: dict, values: dict) -> dict:
  return {k: total.get(k, 0.0) + np.asarray(v, np.float64) for k, v in values.items()}


def make_evaluator(objective, rows, ref_params, batch_size: int, mesh, layout=None):
  """``evaluate(params, reference=None)``: the metrics of one batch of every held-out row (exact; module
  docstring), in batches of ``batch_size`` bucketed rows, each in ``layout`` first."""
  layout = layout or (lambda arrays: arrays)
  size = batch_rows(batch_size, len(rows), mesh)
  additive = hasattr(objective, "counts")  # else sum the (clamped) denominators
  counts = jax.jit(objective.counts if additive else objective.denominators)
  statistics_hook = getattr(objective, "statistics", None)
  statistics = None if statistics_hook is None else jax.jit(statistics_hook)

  @jax.jit
  def loss_and_metrics(params, ref_params, batch, denominators):
    loss, metrics = objective.loss(params, ref_params, batch, denominators)
    return dict(metrics, loss=loss)

  def batches():
    for _, arrays in padded_batches(rows, size):
      yield shard_global_batch(layout(arrays), mesh)

  cache = {}

  def global_counts():  # independent of the params: one pass, on the first evaluation
    if "counts" not in cache:
      total = {}
      for batch in batches():
        total = _add(total, to_host(counts(batch)))
      denominators = {k: jnp.float32(v) for k, v in total.items()}
      cache["counts"] = at_least_one(denominators) if additive else denominators
    return dict(cache["counts"])

  def evaluate(params, reference=None):
    """The metrics of ``params``; ``reference`` replaces the ``ref_params`` given above
    (a LoRA run's base, which its step donates and returns)."""
    ref = ref_params if reference is None else reference
    denominators = global_counts()
    if statistics is not None:
      shares = {}
      for batch in batches():
        share = to_host(statistics(params, ref, batch, denominators))
        if not share:  # the objective declares none (no forward pass was run)
          break
        shares = _add(shares, share)
      denominators.update({k: jnp.float32(v) for k, v in shares.items()})
    metrics = {}
    for batch in batches():
      metrics = _add(metrics, to_floats(to_host(loss_and_metrics(params, ref, batch,
                                                                 denominators))))
    return {k: float(v) for k, v in metrics.items()}
  return evaluate

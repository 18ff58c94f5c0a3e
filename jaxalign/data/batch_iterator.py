"""Deterministic, resumable, host-sharded batches over encoded rows.

Epoch ``e`` visits the rows in the order ``numpy.random.default_rng([seed, e]).permutation(N)``
(or ``0..N-1`` with ``shuffle=False``), or the rows' own ``epoch_order(seed, e, shuffle)``
when they have one (:class:`~jaxalign.data.mixture.MixedRows`: files mixed by weight); global
batch ``k`` of the epoch is rows ``order[k * B : (k + 1) * B]``; host ``p`` of ``P`` takes the
``p``-th slice of ``B / P`` of them. Every host computes the same order, and the batch length
``T`` is the bucket of the longest row in the GLOBAL batch, so all hosts' local batches have
one shape and assemble into one global array. The last ``N mod B`` rows of each epoch's order
are not used in that epoch (static shapes); with shuffling they differ from epoch to epoch.

State: ``get_state() -> {"seed", "epoch", "position", "num_rows"}`` (ints; ``position`` counts
global batches already returned in the epoch). ``set_state`` restores it and checks that the
seed and the number of rows match, so a resumed run continues with exactly the batches an
uninterrupted run would have produced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.data.batches import bucket_length, default_buckets


class BatchIterator:
  """Batches of ``rows`` (:class:`PreferenceRows`, :class:`SFTRows` or :class:`PromptRows`).

  Args:
    rows: anything with ``__len__``, ``lengths()``, ``batch(indices, length)``, ``max_length``.
    batch_size: the GLOBAL batch size (divisible by ``process_count``).
    seed: shuffling seed.
    shuffle: permute each epoch (else file order).
    num_epochs: stop after this many epochs (None: forever).
    buckets: allowed batch lengths (default: powers of two from 16, then ``rows.max_length``).
    process_index, process_count: this host and the number of hosts
      (``jax.process_index()``, ``jax.process_count()``).
  """

  def __init__(self, rows, batch_size: int, *, seed: int = 0, shuffle: bool = True,
               num_epochs: int | None = None, buckets: Sequence[int] | None = None,
               process_index: int = 0, process_count: int = 1):
    if batch_size % process_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by process_count "
                       f"{process_count}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if len(rows) < batch_size:
      raise ValueError(f"{len(rows)} rows cannot fill one batch of {batch_size}")
    self.rows, self.batch_size, self.seed, self.shuffle = rows, batch_size, seed, shuffle
    self.num_epochs, self.process_index = num_epochs, process_index
    self.local_batch_size = batch_size // process_count
    self.buckets = tuple(buckets) if buckets else default_buckets(rows.max_length)
    self.lengths = rows.lengths()  # [N]
    self.epoch, self.position = 0, 0
    self._order_epoch, self._order = None, None

  @property
  def batches_per_epoch(self) -> int:
    return len(self.rows) // self.batch_size

  @property
  def rows_unused_per_epoch(self) -> int:
    return len(self.rows) % self.batch_size

  def order(self, epoch: int) -> np.ndarray:
    """The row order of ``epoch`` (the same on every host)."""
    if self._order_epoch != epoch:
      count = len(self.rows)
      epoch_order = getattr(self.rows, "epoch_order", None)
      if epoch_order is not None:
        self._order = np.asarray(epoch_order(self.seed, epoch, self.shuffle))
      else:
        self._order = (np.random.default_rng([self.seed, epoch]).permutation(count)
                       if self.shuffle else np.arange(count))
      self._order_epoch = epoch
    return self._order

  def global_indices(self, epoch: int, position: int) -> np.ndarray:
    """Row indices of global batch ``position`` of ``epoch`` [B]."""
    start = position * self.batch_size
    return self.order(epoch)[start:start + self.batch_size]

  def __iter__(self):
    return self

  def __next__(self):
    if self.position >= self.batches_per_epoch:
      self.epoch, self.position = self.epoch + 1, 0
    if self.num_epochs is not None and self.epoch >= self.num_epochs:
      raise StopIteration
    indices = self.global_indices(self.epoch, self.position)
    length = bucket_length(int(self.lengths[indices].max()), self.buckets)
    start = self.process_index * self.local_batch_size
    self.position += 1
    return self.rows.batch(indices[start:start + self.local_batch_size], length)

  def get_state(self) -> dict[str, int]:
    return {"seed": int(self.seed), "epoch": int(self.epoch), "position": int(self.position),
            "num_rows": len(self.rows)}

  def set_state(self, state: dict[str, int]) -> None:
    for key, expected in (("seed", self.seed), ("num_rows", len(self.rows))):
      if int(state[key]) != expected:
        raise ValueError(f"iterator state has {key}={int(state[key])}, this iterator "
                         f"{expected}: it would not continue the saved run")
    self.epoch, self.position = int(state["epoch"]), int(state["position"])

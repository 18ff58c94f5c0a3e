"""Several sets of rows mixed with weights, in a deterministic, resumable epoch order.

``MixedRows(parts, weights)`` is one rows object holding every part's rows (concatenated, so
``batch(indices, length)`` works as for one file) with its own ``epoch_order(seed, epoch)``,
which :class:`~jaxalign.data.BatchIterator` uses instead of a plain permutation:

- An epoch has ``N = sum_f N_f`` slots (as many as there are rows). Part ``f`` gets ``c_f``
  of them: ``N w_f / W`` rounded by largest remainder, so the proportions hold exactly in
  every epoch, whatever the parts' sizes.
- Part ``f``'s rows come from its own stream: its rows in the order of the permutations
  ``default_rng([seed, 2, f, k]).permutation(N_f)``, ``k = 0, 1, ...``, and epoch ``e`` takes
  stream positions ``[e c_f, (e + 1) c_f)``. An upsampled part repeats whole passes over its
  rows; a downsampled one continues next epoch where this one stopped.
- The slots are shuffled with ``default_rng([seed, epoch, 1])`` (interleaved evenly when
  ``shuffle=False``).

The order is a pure function of ``(seed, epoch)``, so the iterator's ``(epoch, position)``
state resumes it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.data.encoded import concat_rows


def slot_counts(sizes: Sequence[int], weights: Sequence[float]) -> np.ndarray:
  """Slots per part in an epoch of ``sum(sizes)``: ``N w_f / W`` by largest remainder."""
  weights = np.asarray(weights, np.float64)
  if len(weights) != len(sizes) or not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
    raise ValueError(f"mixture weights must be finite and > 0, one per part: {list(weights)}")
  total = int(sum(sizes))
  quotas = total * weights / weights.sum()
  counts = np.floor(quotas).astype(np.int64)
  order = np.argsort(-(quotas - counts), kind="stable")
  counts[order[:total - int(counts.sum())]] += 1
  return counts


class MixedRows:
  """Rows of several parts (one rows class) sampled in proportion to ``weights``.

  Attributes other than the mixture's are those of the concatenated rows (``self.rows``):
  ``pad_id``, ``max_length``, ``prompts``, ``sources``, ...; ``names`` label the parts.
  """

  def __init__(self, parts: Sequence, weights: Sequence[float], names: Sequence[str] = ()):
    if any(len(part) == 0 for part in parts):
      raise ValueError("every part of a mixture needs at least one row")
    self.rows = concat_rows(parts)
    self.sizes = np.array([len(part) for part in parts], np.int64)
    self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
    self.weights = np.asarray(weights, np.float64)
    self.counts = slot_counts(self.sizes, self.weights)
    self.names = list(names) or [f"part {i}" for i in range(len(parts))]

  def __len__(self) -> int:
    return len(self.rows)

  def __getattr__(self, name):
    if name == "rows":  # not set yet (e.g. while unpickling)
      raise AttributeError(name)
    return getattr(self.rows, name)

  def lengths(self) -> np.ndarray:
    return self.rows.lengths()

  def batch(self, indices, length: int):
    return self.rows.batch(indices, length)

  def _stream(self, part: int, start: int, count: int, seed: int, shuffle: bool) -> np.ndarray:
    """Positions ``[start, start + count)`` of part ``part``'s row stream, as row indices."""
    size = int(self.sizes[part])
    positions = np.arange(start, start + count, dtype=np.int64)
    rows = np.empty(count, np.int64)
    for k in np.unique(positions // size):
      order = (np.random.default_rng([seed, 2, part, int(k)]).permutation(size) if shuffle
               else np.arange(size))
      chosen = positions // size == k
      rows[chosen] = order[positions[chosen] % size]
    return rows + self.offsets[part]

  def epoch_order(self, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The row indices of epoch ``epoch`` [N] (module docstring)."""
    parts = np.repeat(np.arange(len(self.counts)), self.counts)  # the part of each slot
    if shuffle:
      parts = np.random.default_rng([seed, epoch, 1]).permutation(parts)
    else:  # slot j of part f at (j + 0.5) / c_f of the epoch
      spread = np.concatenate([(np.arange(c) + 0.5) / c for c in self.counts if c])
      parts = parts[np.argsort(spread, kind="stable")]
    order = np.empty(len(parts), np.int64)
    for part, count in enumerate(self.counts):
      if count:
        order[parts == part] = self._stream(part, epoch * int(count), int(count), seed, shuffle)
    return order

  def describe(self) -> str:
    """e.g. ``a.jsonl: 40 rows, weight 3 (75% of samples); b.jsonl: ...``."""
    shares = self.counts / max(int(self.counts.sum()), 1)
    return "; ".join(f"{name}: {size} rows, weight {weight:g} ({share:.0%} of samples)"
                     for name, size, weight, share in zip(self.names, self.sizes, self.weights,
                                                          shares))

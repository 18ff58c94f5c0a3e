"""Padding-free reward-model batches: several pairs per row (``data.packing`` for ``rm``).

:func:`packed_pairs` lays each pair out as one unit, as in the shared-prompt layout
(``data/pair_layout.py``): ``[prefix | chosen suffix | rejected suffix]``, or with
``share_prompt=False`` ``[chosen | rejected]`` (two whole sequences). The units are packed
first-fit decreasing (never split, deterministic) into ``B'`` rows of width ``W``, the
longest unit's width. Pair ``k`` of a row has segments ``3k + 1`` (prefix), ``3k + 2``
(chosen), ``3k + 3`` (rejected), and every token of it has prefix id ``3k + 1``: a token sees
its own pair's prefix and its own sequence, nothing of another pair
(``models.transformer.attention_bias``). Positions restart per sequence, so every hidden state
is the one the two-row layout computes.

Per-pair arrays move to ``[B', P]`` (``P`` the most pairs in a row): ``chosen_last`` /
``rejected_last`` (the slots of each side's last token, where the score head reads),
``pair_present`` (1 where a pair sits), ``pair_order`` (the pair's index in the batch, -1:
none), and the batch's own per-pair arrays (``weights``, ``margin``, ``scores``...), 0 in empty
places. A pair of weight 0 (a padding row of an eval batch) is left out: it counts for nothing.

Widths ``(B', W, P)`` are rounded up (``fine_bucket``; ``B'`` also to a multiple of
``row_multiple``, the batch shards times micro-batches) so ``jit`` sees few shapes.
"""

from __future__ import annotations

import numpy as np

from jaxalign.data.pair_layout import (LAYOUT_KEYS, PAIR_KEYS, PREFIX, fine_bucket, pair_row,
                                       real_tokens)
from jaxalign.data.packing import first_fit_bins, round_rows

ROW_KEYS = LAYOUT_KEYS[:5]  # pair_tokens ... pair_prefix_ids [B', W]
SLOT_KEYS = ("chosen_last", "rejected_last", "pair_present", "pair_order")  # [B', P]


def _units(arrays: dict, pairs: list[int], share_prompt: bool) -> dict:
  """(tokens, positions, segments, (chosen last, rejected last)) of each pair in ``pairs``."""
  units = {}
  for b in pairs:
    row = pair_row(*real_tokens(arrays, "chosen", b), *real_tokens(arrays, "rejected", b),
                   share=share_prompt)
    units[b] = (row[0], row[1], row[2], row[6])
  return units


def packed_pairs(arrays: dict, row_multiple: int = 1, share_prompt: bool = True,
                 agree_widths=None) -> dict:
  """The packed layout (module docstring) of a two-row pair batch (numpy dict);
  ``agree_widths`` maps this batch's widths ``(B', W, P)`` to the ones to use (at least as
  large, e.g. the maximum over processes)."""
  B = arrays["chosen_tokens"].shape[0]
  weights = arrays.get("weights")
  kept = [b for b in range(B) if weights is None or weights[b] != 0]
  units = _units(arrays, kept, share_prompt)
  width = fine_bucket(max([len(units[b][0]) for b in kept], default=1))
  bins = [[kept[i] for i in members]
          for members in first_fit_bins([len(units[b][0]) for b in kept], width, True)]
  per_row = max([len(members) for members in bins], default=1)
  rows, width, P = (agree_widths or (lambda widths: widths))(
      (round_rows(max(1, len(bins)), row_multiple), width, fine_bucket(per_row, smallest=1)))
  if len(bins) > rows or per_row > P:
    raise ValueError(f"{len(bins)} packed rows of up to {per_row} pairs needed, "
                     f"{rows} x {P} given")
  out = {key: np.zeros((rows, width), np.int32) for key in ROW_KEYS}
  out.update({key: np.zeros((rows, P), np.int32) for key in SLOT_KEYS})
  out["pair_order"][:] = -1
  per_pair = {k: v for k, v in arrays.items() if k not in PAIR_KEYS and np.ndim(v) == 1}
  out.update({k: np.zeros((rows, P), v.dtype) for k, v in per_pair.items()})
  for row, members in enumerate(bins):
    slot = 0
    for k, b in enumerate(members):
      tokens, positions, segments, (chosen_last, rejected_last) = units[b]
      n, first = len(tokens), 3 * k
      if slot + n > width:
        raise ValueError(f"packed row {row} needs width {slot + n}, {width} given")
      out["pair_tokens"][row, slot:slot + n] = tokens
      out["pair_attention_mask"][row, slot:slot + n] = 1
      out["pair_positions"][row, slot:slot + n] = positions
      out["pair_segment_ids"][row, slot:slot + n] = segments + first
      out["pair_prefix_ids"][row, slot:slot + n] = PREFIX + first
      for key, last in (("chosen_last", chosen_last), ("rejected_last", rejected_last)):
        out[key][row, k] = slot + last if last >= 0 else -1  # -1: an empty side, as unpacked
      out["pair_present"][row, k], out["pair_order"][row, k] = 1, b
      for key, value in per_pair.items():
        out[key][row, k] = value[b]
      slot += n
  return out


def is_packed_pairs(batch) -> bool:
  """Whether a pair batch is in the packed layout (per-pair arrays [B', P])."""
  return "pair_present" in batch

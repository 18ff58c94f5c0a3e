"""Padding-free SFT batches: several rows per packed row, the LM head on response tokens only.

:func:`packed_rows` turns a right-padded SFT batch (``tokens, attention_mask, loss_mask``
[B, T]) into ``B'`` packed rows of width ``W``: each example's real tokens sit in one packed row
(first-fit decreasing, so an example is never split), ``segment_ids`` number the examples of a
row from 1 (0: padding), ``positions`` restart at 0 for each, and attention is block-diagonal
(``models.transformer.attention_bias``), so every token's hidden state is the one its own
padded row gives. With ``pack=False`` example ``b`` keeps row ``b`` (no packing, only the
response gather below).

The loss reads log-probs only at response tokens: entry ``r`` of ``response_targets`` [B', R]
is a response token, ``response_source`` the slot whose hidden state predicts it (-1: none,
the token opens its example and scores 0, as in the padded layout), ``response_side`` 1 where
the entry is used. The token-level SFT loss is a sum over these entries divided by the global
response-token count, the same number as on the padded rows.

Widths are ``(B', W, R)``: ``W`` is the batch's length ``T``; ``B'`` and ``R`` are rounded up
(``fine_bucket``; ``B'`` also to a multiple of ``row_multiple``, the batch shards times
micro-batches) so ``jit`` sees few shapes. Per-example arrays ([B]: ``truncated``...) are
dropped: rows no longer line up with examples.
"""

from __future__ import annotations

import numpy as np

from jaxalign.data.pair_layout import fine_bucket

PACKED_KEYS = ("tokens", "attention_mask", "positions", "segment_ids")
RESPONSE_KEYS = ("response_source", "response_targets", "response_side")


def _examples(arrays: dict) -> list[tuple[np.ndarray, np.ndarray]]:
  """Each example's real tokens and response mask."""
  out = []
  for tokens, attention, loss in zip(arrays["tokens"], arrays["attention_mask"],
                                     arrays["loss_mask"]):
    keep = attention > 0
    out.append((tokens[keep], loss[keep] > 0))
  return out


def first_fit_bins(lengths: list[int], width: int, pack: bool) -> list[list[int]]:
  """First-fit decreasing: lists of example indices whose lengths sum to at most ``width``
  (ties keep file order, so the packing is deterministic)."""
  if not pack:
    return [[i] for i in range(len(lengths))]
  bins, room = [], []
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    fits = next((j for j, free in enumerate(room) if free >= lengths[i]), None)
    if fits is None:
      bins.append([i])
      room.append(width - lengths[i])
    else:
      bins[fits].append(i)
      room[fits] -= lengths[i]
  return bins


def round_rows(rows: int, row_multiple: int) -> int:
  rows = fine_bucket(rows, smallest=1)
  return -(-rows // row_multiple) * row_multiple


def packed_rows(arrays: dict, row_multiple: int = 1, pack: bool = True,
                agree_widths=None) -> dict:
  """The packed layout (module docstring) of an SFT batch (numpy dict); ``agree_widths``
  maps this batch's widths ``(B', W, R)`` to the ones to use (at least as large)."""
  examples = _examples(arrays)
  width = arrays["tokens"].shape[1]
  bins = first_fit_bins([len(t) for t, _ in examples], width, pack)
  responses = max(1, max(sum(int(examples[i][1].sum()) for i in b) for b in bins))
  rows = round_rows(len(bins), row_multiple) if pack else len(bins)
  rows, width, R = (agree_widths or (lambda widths: widths))((rows, width,
                                                             fine_bucket(responses)))
  if len(bins) > rows:
    raise ValueError(f"{len(bins)} packed rows needed, {rows} given")
  out = {key: np.zeros((rows, width), np.int32) for key in PACKED_KEYS}
  out.update({key: np.zeros((rows, R), np.int32) for key in RESPONSE_KEYS})
  out["response_source"][:] = -1
  for row, members in enumerate(bins):
    slot, entry = 0, 0
    for segment, i in enumerate(members, start=1):
      tokens, loss = examples[i]
      n, index = len(tokens), np.flatnonzero(loss)
      out["tokens"][row, slot:slot + n] = tokens
      out["attention_mask"][row, slot:slot + n] = 1
      out["positions"][row, slot:slot + n] = np.arange(n)
      out["segment_ids"][row, slot:slot + n] = segment
      m = len(index)
      if entry + m > R:
        raise ValueError(f"packed row {row} has more than {R} response tokens")
      out["response_source"][row, entry:entry + m] = np.where(index > 0, slot + index - 1, -1)
      out["response_targets"][row, entry:entry + m] = tokens[index]
      out["response_side"][row, entry:entry + m] = 1
      slot, entry = slot + n, entry + m
  return out


def padding_report(lengths: np.ndarray, batch_size: int, width: int) -> dict[str, float]:
  """Token slots per batch of ``batch_size`` rows padded to ``width`` against packed rows of
  the same width (first-fit decreasing), over consecutive batches of ``lengths``."""
  padded = packed = real = 0
  for start in range(0, len(lengths) - batch_size + 1, batch_size):
    chunk = [int(n) for n in lengths[start:start + batch_size]]
    padded += batch_size * width
    packed += len(first_fit_bins(chunk, width, True)) * width
    real += sum(chunk)
  return {"real_tokens": float(real), "padded_slots": float(padded),
          "packed_slots": float(packed),
          "padding_saved": float(1 - packed / padded) if padded else 0.0}

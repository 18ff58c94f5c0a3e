"""Shared-prompt pairs: chosen and rejected in one row, the prompt computed once.

The two-row layout (``PreferenceBatch``) runs ``prompt + chosen`` and ``prompt + rejected`` as
two rows, so every layer sees the prompt twice. :func:`shared_prompt_pairs` lays pair ``b`` out
as one row ``[prefix | chosen suffix | rejected suffix | pad]``:

- ``prefix`` is the longest common start of the two rows' real tokens that holds no response
  token (the prompt, unless the two tokenisations differ sooner), ``s`` tokens;
- positions restart after the chosen suffix (``s, s + 1, ...``), so every token keeps the
  position it has in its own row;
- ``pair_segment_ids`` is 1 on the prefix, 2 on the chosen suffix, 3 on the rejected one, 0 on
  padding, and every real token's ``pair_prefix_ids`` is 1: a token attends causally to the
  prefix and its own segment, so the rejected suffix never sees the chosen one
  (``models.transformer.attention_bias``).

Each hidden state is then the one the two-row layout computes (up to float rounding), with
``2 s`` fewer tokens per pair. Log-probs are read only where a loss needs them: entry ``r`` of
``response_targets`` [B, R] is a response token, ``response_source`` the slot whose hidden
state predicts it (-1: none, the token opens its row and scores 0, as in the two-row layout),
``response_side`` 1 (chosen), 2 (rejected) or 0 (unused). So the LM head runs on ``R``
response tokens, not on every slot. ``chosen_last`` / ``rejected_last`` [B] are the slots of
each sequence's last token (reward-model scores).

Widths are ``fine_bucket``s of the batch's longest row and response count (few shapes, at most
25% padding); ``agree_widths`` may raise them (e.g. to the maximum over processes).
"""

from __future__ import annotations

import numpy as np

PAIR_KEYS = tuple(f"{side}_{name}" for side in ("chosen", "rejected")
                  for name in ("tokens", "attention_mask", "loss_mask"))
LAYOUT_KEYS = ("pair_tokens", "pair_attention_mask", "pair_positions", "pair_segment_ids",
               "pair_prefix_ids", "response_source", "response_targets", "response_side",
               "chosen_last", "rejected_last")
PREFIX, CHOSEN, REJECTED = 1, 2, 3


def fine_bucket(length: int, smallest: int = 16) -> int:
  """``length`` rounded up to a quarter of its power of two (16, 20, 24, 28, 32, 40, ...):
  four shapes per octave, at most 25% padding."""
  if length <= smallest:
    return smallest
  step = max(1, 2 ** (int(length - 1).bit_length() - 3))
  return -(-length // step) * step


def real_tokens(arrays: dict, side: str, row: int) -> tuple[np.ndarray, np.ndarray]:
  keep = arrays[f"{side}_attention_mask"][row] > 0
  return arrays[f"{side}_tokens"][row][keep], arrays[f"{side}_loss_mask"][row][keep] > 0


def _prefix_length(chosen, chosen_loss, rejected, rejected_loss) -> int:
  """Common start of the two rows, cut before the first response token of either."""
  n = min(len(chosen), len(rejected))
  differ = np.flatnonzero(chosen[:n] != rejected[:n])
  common = int(differ[0]) if len(differ) else n
  for loss in (chosen_loss, rejected_loss):
    if loss.any():
      common = min(common, int(np.argmax(loss)))
  return common


def pair_row(chosen, chosen_loss, rejected, rejected_loss, share: bool = True):
  """One pair's row (tokens, positions, segments), response entries and last slots; with
  ``share=False`` no prefix is shared: the row is ``[chosen | rejected]``, two whole
  sequences (segments 2 and 3, positions restarting at 0)."""
  s = _prefix_length(chosen, chosen_loss, rejected, rejected_loss) if share else 0
  nc, nr = len(chosen), len(rejected)
  tokens = np.concatenate([chosen, rejected[s:]])
  positions = np.concatenate([np.arange(nc), np.arange(s, nr)])
  segments = np.concatenate([np.full(s, PREFIX), np.full(nc - s, CHOSEN),
                             np.full(nr - s, REJECTED)])
  rejected_slot = np.where(np.arange(nr) < s, np.arange(nr), nc + np.arange(nr) - s)  # [nr]
  entries = []
  for side, loss, row_tokens, slot in ((1, chosen_loss, chosen, np.arange(nc)),
                                       (2, rejected_loss, rejected, rejected_slot)):
    index = np.flatnonzero(loss)
    source = np.where(index > 0, slot[np.maximum(index - 1, 0)], -1)
    entries.append((source, row_tokens[index], np.full(len(index), side)))
  source, targets, sides = (np.concatenate(parts) for parts in zip(*entries))
  last = (nc - 1, int(rejected_slot[nr - 1]) if nr else -1)
  return tokens, positions, segments, source, targets, sides, last


def _rows(arrays: dict) -> list:
  return [pair_row(*real_tokens(arrays, "chosen", b), *real_tokens(arrays, "rejected", b))
          for b in range(arrays["chosen_tokens"].shape[0])]


def _widths(rows: list) -> tuple[int, int]:
  return (fine_bucket(max(len(r[0]) for r in rows)),
          fine_bucket(max(1, max(len(r[3]) for r in rows))))


def shared_prompt_pairs(arrays: dict, agree_widths=None) -> dict:
  """The shared-prompt layout (module docstring) of a two-row pair batch (numpy dict).

  Per-pair arrays ([B]: weights, scores, cached reference log-probs...) pass through; the
  two-row arrays are replaced by the layout's; padding holds token 0. ``agree_widths`` maps
  this batch's (row, response) widths to the ones to use (at least as large).
  """
  B = arrays["chosen_tokens"].shape[0]
  rows = _rows(arrays)
  L, R = (agree_widths or (lambda widths: widths))(_widths(rows))
  out = {key: np.zeros((B, L), np.int32) for key in LAYOUT_KEYS[:5]}
  out.update({key: np.zeros((B, R), np.int32) for key in LAYOUT_KEYS[5:8]})
  out["response_source"][:] = -1
  out["chosen_last"], out["rejected_last"] = np.zeros(B, np.int32), np.zeros(B, np.int32)
  for b, (tokens, positions, segments, source, targets, sides, last) in enumerate(rows):
    n, m = len(tokens), len(source)
    if n > L or m > R:
      raise ValueError(f"pair {b} needs widths ({n}, {m}), more than the given {(L, R)}")
    out["pair_tokens"][b, :n], out["pair_positions"][b, :n] = tokens, positions
    out["pair_attention_mask"][b, :n], out["pair_segment_ids"][b, :n] = 1, segments
    out["pair_prefix_ids"][b, :n] = PREFIX
    out["response_source"][b, :m], out["response_targets"][b, :m] = source, targets
    out["response_side"][b, :m] = sides
    out["chosen_last"][b], out["rejected_last"][b] = last
  rest = {k: v for k, v in arrays.items() if k not in PAIR_KEYS and np.ndim(v) == 1}
  return {**rest, **out}


def is_shared(batch) -> bool:
  """Whether a batch is in the shared-prompt layout."""
  return "pair_tokens" in batch

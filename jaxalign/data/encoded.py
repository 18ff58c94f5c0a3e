"""Token ids of a whole dataset, ready to batch: prompts, responses and per-row flags.

Made by :mod:`jaxalign.data.tokenization` (from text) or ``from_token_lists`` (from ids, e.g.
the synthetic tasks). Every row already fits the budget; ``batch(indices, length)`` pads the
chosen rows to ``length`` and returns a typed batch. Responses end in EOS unless the row's
``truncated`` flag says it was cut.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxalign.data.batches import (PreferenceBatch, PromptBatch, SFTBatch, UnpairedBatch,
                                   left_pad, right_pad)


def _as_ids(rows: Sequence) -> list[np.ndarray]:
  return [np.asarray(row, np.int32).reshape(-1) for row in rows]


def _truncated_flags(responses: list[np.ndarray], eos_id: int) -> np.ndarray:
  """A response is truncated if it does not end with EOS."""
  return np.array([len(r) == 0 or int(r[-1]) != eos_id for r in responses], bool)


def check_pad(pad_id: int, eos_id: int) -> None:
  """EOS is a scored token and pad never is: they must differ (docs/data.md, pad policy)."""
  if pad_id == eos_id:
    raise ValueError(f"pad_id == eos_id == {eos_id}: choose a distinct pad id (any id but "
                     "EOS is safe, since masks come from lengths)")


def _sources(sources, count) -> list[str]:
  return list(sources) if sources is not None else [f"row {i}" for i in range(count)]


@dataclasses.dataclass
class PreferenceRows:
  """Preference pairs as ids; ``lengths()`` is prompt + the longer response."""

  prompts: list[np.ndarray]
  chosen: list[np.ndarray]
  rejected: list[np.ndarray]
  weights: np.ndarray  # [N] float32
  scores: np.ndarray  # [N] float32, NaN where the data had none
  chosen_truncated: np.ndarray  # [N] bool
  rejected_truncated: np.ndarray  # [N] bool
  pad_id: int
  max_length: int
  sources: list[str]

  def __len__(self) -> int:
    return len(self.prompts)

  def lengths(self) -> np.ndarray:
    return np.array([len(p) + max(len(c), len(r)) for p, c, r in
                     zip(self.prompts, self.chosen, self.rejected)], np.int32)

  def batch(self, indices: Sequence[int], length: int) -> PreferenceBatch:
    prompts = [self.prompts[i] for i in indices]
    chosen = right_pad(prompts, [self.chosen[i] for i in indices], length, self.pad_id)
    rejected = right_pad(prompts, [self.rejected[i] for i in indices], length, self.pad_id)
    indices = np.asarray(indices, np.int64)
    return PreferenceBatch(
        chosen_tokens=chosen[0], chosen_attention_mask=chosen[1], chosen_loss_mask=chosen[2],
        rejected_tokens=rejected[0], rejected_attention_mask=rejected[1],
        rejected_loss_mask=rejected[2], weights=self.weights[indices],
        scores=np.nan_to_num(self.scores[indices], nan=0.0).astype(np.float32),
        chosen_truncated=self.chosen_truncated[indices],
        rejected_truncated=self.rejected_truncated[indices])

  @classmethod
  def from_token_lists(cls, prompts, chosen, rejected, pad_id: int, eos_id: int,
                       max_length: int | None = None, weights=None, scores=None,
                       sources=None) -> PreferenceRows:
    """Rows from id lists (responses should end in EOS; those that do not are flagged)."""
    check_pad(pad_id, eos_id)
    prompts, chosen, rejected = _as_ids(prompts), _as_ids(chosen), _as_ids(rejected)
    count = len(prompts)
    rows = cls(prompts, chosen, rejected,
               weights=np.ones(count, np.float32) if weights is None
               else np.asarray(weights, np.float32),
               scores=np.full(count, np.nan, np.float32) if scores is None
               else np.asarray(scores, np.float32),
               chosen_truncated=_truncated_flags(chosen, eos_id),
               rejected_truncated=_truncated_flags(rejected, eos_id), pad_id=pad_id,
               max_length=0, sources=_sources(sources, count))
    rows.max_length = max_length or int(rows.lengths().max(initial=1))
    return rows


@dataclasses.dataclass
class SFTRows:
  """Prompt + response rows as ids."""

  prompts: list[np.ndarray]
  responses: list[np.ndarray]
  truncated: np.ndarray  # [N] bool
  pad_id: int
  max_length: int
  sources: list[str]

  def __len__(self) -> int:
    return len(self.prompts)

  def lengths(self) -> np.ndarray:
    return np.array([len(p) + len(r) for p, r in zip(self.prompts, self.responses)], np.int32)

  def batch(self, indices: Sequence[int], length: int) -> SFTBatch:
    tokens, attention_mask, loss_mask = right_pad(
        [self.prompts[i] for i in indices], [self.responses[i] for i in indices], length,
        self.pad_id)
    return SFTBatch(tokens=tokens, attention_mask=attention_mask, loss_mask=loss_mask,
                    truncated=self.truncated[np.asarray(indices, np.int64)])

  @classmethod
  def from_token_lists(cls, prompts, responses, pad_id: int, eos_id: int,
                       max_length: int | None = None, sources=None) -> SFTRows:
    check_pad(pad_id, eos_id)
    prompts, responses = _as_ids(prompts), _as_ids(responses)
    rows = cls(prompts, responses, _truncated_flags(responses, eos_id), pad_id, 0,
               _sources(sources, len(prompts)))
    rows.max_length = max_length or int(rows.lengths().max(initial=1))
    return rows


@dataclasses.dataclass
class UnpairedRows:
  """Unpaired (KTO) rows as ids: a prompt, one completion and whether it is desirable."""

  prompts: list[np.ndarray]
  responses: list[np.ndarray]
  desirable: np.ndarray  # [N] bool
  weights: np.ndarray  # [N] float32
  truncated: np.ndarray  # [N] bool
  pad_id: int
  max_length: int
  sources: list[str]

  def __len__(self) -> int:
    return len(self.prompts)

  def lengths(self) -> np.ndarray:
    return np.array([len(p) + len(r) for p, r in zip(self.prompts, self.responses)], np.int32)

  def batch(self, indices: Sequence[int], length: int) -> UnpairedBatch:
    tokens, attention_mask, loss_mask = right_pad(
        [self.prompts[i] for i in indices], [self.responses[i] for i in indices], length,
        self.pad_id)
    indices = np.asarray(indices, np.int64)
    return UnpairedBatch(tokens=tokens, attention_mask=attention_mask, loss_mask=loss_mask,
                         desirable=self.desirable[indices], weights=self.weights[indices],
                         truncated=self.truncated[indices])

  @classmethod
  def from_token_lists(cls, prompts, responses, desirable, pad_id: int, eos_id: int,
                       max_length: int | None = None, weights=None,
                       sources=None) -> UnpairedRows:
    check_pad(pad_id, eos_id)
    prompts, responses = _as_ids(prompts), _as_ids(responses)
    count = len(prompts)
    rows = cls(prompts, responses, np.asarray(desirable, bool),
               np.ones(count, np.float32) if weights is None
               else np.asarray(weights, np.float32),
               _truncated_flags(responses, eos_id), pad_id, 0, _sources(sources, count))
    rows.max_length = max_length or int(rows.lengths().max(initial=1))
    return rows


def concat_rows(parts: Sequence):
  """Rows of one class (PreferenceRows, SFTRows, UnpairedRows, PromptRows or
  AnswerPromptRows) as one: lists and arrays concatenated in order; one ``pad_id``; the
  largest ``max_length`` (and ``answer_length``)."""
  first = parts[0]
  if any(type(p) is not type(first) or p.pad_id != first.pad_id for p in parts):
    raise ValueError("rows to concatenate must be of one class with one pad_id")
  values = {}
  for field in dataclasses.fields(first):
    items = [getattr(p, field.name) for p in parts]
    if field.name == "pad_id":
      values[field.name] = first.pad_id
    elif field.name == "max_length" or isinstance(items[0], int):  # budgets: the largest
      values[field.name] = max(items)
    elif isinstance(items[0], np.ndarray):
      values[field.name] = np.concatenate(items)
    else:
      values[field.name] = [x for item in items for x in item]
  return type(first)(**values)


@dataclasses.dataclass
class PromptRows:
  """Prompts as ids (batched left-padded); ``max_length`` is the prompt budget."""

  prompts: list[np.ndarray]
  truncated: np.ndarray  # [N] bool
  pad_id: int
  max_length: int
  sources: list[str]

  def __len__(self) -> int:
    return len(self.prompts)

  def lengths(self) -> np.ndarray:
    return np.array([len(p) for p in self.prompts], np.int32)

  def batch(self, indices: Sequence[int], length: int) -> PromptBatch:
    tokens, attention_mask = left_pad([self.prompts[i] for i in indices], length, self.pad_id)
    return PromptBatch(tokens=tokens, attention_mask=attention_mask,
                       truncated=self.truncated[np.asarray(indices, np.int64)])

  @classmethod
  def from_token_lists(cls, prompts, pad_id: int, max_length: int | None = None,
                       sources=None) -> PromptRows:
    prompts = _as_ids(prompts)
    rows = cls(prompts, np.zeros(len(prompts), bool), pad_id, 0,
               _sources(sources, len(prompts)))
    rows.max_length = max_length or int(rows.lengths().max(initial=1))
    return rows

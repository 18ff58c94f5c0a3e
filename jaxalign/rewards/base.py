"""The reward-function protocol, and the inputs a trainer hands to reward functions.

A reward function is any callable ``fn(prompts, completions, **fields) -> float32 [B]``:

- a *text* function (the default) gets ``prompts`` and ``completions`` as lists of ``B``
  strings; a completion's text is its real tokens up to, not including, EOS (whether EOS came
  is ``fields["truncated"]``);
- an *ids* function (marked with :func:`ids_reward`, or a ``reward_inputs = "ids"``
  attribute) gets ``prompts`` [B, P] (left-padded) and ``completions`` [B, T] as int arrays;
  their masks are ``fields["prompt_mask"]`` and ``fields["completion_mask"]``.

Every function takes ``**fields`` and ignores the fields it does not use. The fields a
trainer passes (:func:`rollout_inputs` builds them from a sampler output):

============================  ===============================================================
``prompt_ids, prompt_mask``   [B, P] int32, left-padded (row ``b`` of a group repeats its prompt)
``completion_ids``            [B, T] int32, the sampler's ``tokens`` (pad after EOS)
``completion_mask``           [B, T] int32, 1 on real tokens up to and including the first EOS
                              (when absent: from ``eos_id``; ``prompt_mask``: all ones)
``truncated``                 [B] bool, no EOS within ``max_new_tokens``
``eos_id``, ``max_new_tokens``  ints
``tokenizer``                 decodes ids for text functions (optional when no text function)
``answer_tokens, answer_mask``  [B, A] int32, gold answers (prompt rows that have them:
                              ``D.AnswerPromptRows``, the verifiable task)
``answers``                   list of ``B`` gold answer strings (with a tokenizer)
============================  ===============================================================

:func:`call_reward` calls one function with the inputs it wants: ids positional arguments are
decoded with ``fields["tokenizer"]`` for a text function; text positional arguments are
replaced by ``fields["prompt_ids"]`` / ``fields["completion_ids"]`` for an ids function.
Rewards are host-side numpy (the reward model wrapper runs a jitted model inside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

TEXT, IDS = "text", "ids"


class RewardFunction(Protocol):
  def __call__(self, prompts, completions, **fields) -> np.ndarray:
    ...


def ids_reward(fn: Callable) -> Callable:
  """Marks ``fn`` as an ids reward function (``fn.reward_inputs = "ids"``); returns it."""
  fn.reward_inputs = IDS
  return fn


def reward_inputs(fn) -> str:
  """``"ids"``, ``"text"`` (the default) or ``"any"`` (a combination: takes either)."""
  return getattr(fn, "reward_inputs", TEXT)


def is_text(values) -> bool:
  """Whether ``values`` is a list / tuple of strings (text), not token ids."""
  return isinstance(values, (list, tuple)) and (not values or isinstance(values[0], str))


def decode_rows(tokenizer, tokens, mask, drop: Sequence[int] = ()) -> list[str]:
  """Text of each row's real tokens (``mask`` 1), without the ids in ``drop``."""
  tokens, mask = np.asarray(tokens), np.asarray(mask).astype(bool)
  drop = {int(d) for d in drop}
  return [tokenizer.decode([int(t) for t in row[keep] if int(t) not in drop])
          for row, keep in zip(tokens, mask)]


def truncated_rows(completion_ids, completion_mask, eos_id: int) -> np.ndarray:
  """bool [B]: no EOS among a row's real tokens."""
  ids, mask = np.asarray(completion_ids), np.asarray(completion_mask).astype(bool)
  return ~np.any(mask & (ids == eos_id), axis=1)


def eos_mask(completion_ids, eos_id: int | None) -> np.ndarray:
  """int32 [B, T]: 1 on tokens up to and including each row's first EOS (every token when
  ``eos_id`` is None), the sampler's ``response_mask``."""
  ids = np.asarray(completion_ids)
  if eos_id is None:
    return np.ones(ids.shape, np.int32)
  is_eos = ids == eos_id
  before = np.cumsum(is_eos, axis=1) - is_eos  # EOS seen strictly before each position
  return (before == 0).astype(np.int32)


def completion_lengths(completions, completion_mask=None) -> np.ndarray:
  """int [B]: real completion tokens (EOS included): ``completion_mask`` row sums, else the
  rows' lengths (ragged id lists)."""
  if completion_mask is not None:
    return np.asarray(completion_mask).astype(np.int64).sum(axis=1)
  return np.array([len(row) for row in completions], np.int64)


class RewardInputs:
  """One batch of reward inputs in both forms, converted lazily and once.

  ``prompts, completions``: text lists or id arrays; ``fields``: the trainer's fields.
  ``text()`` / ``ids()`` give ``(prompts, completions)`` in that form; ``fields`` gains
  ``prompt_ids`` / ``completion_ids`` (when given as ids) and, when not given,
  ``completion_mask`` (up to the first EOS), ``prompt_mask`` (ones) and ``truncated`` (from
  the ids, masks and ``eos_id``).
  """

  def __init__(self, prompts, completions, fields: dict[str, Any]):
    self.fields = dict(fields)
    if is_text(completions):
      self._text = (list(prompts), list(completions))
    else:
      self._text = None
      self.fields.setdefault("prompt_ids", np.asarray(prompts))
      self.fields.setdefault("completion_ids", np.asarray(completions))
    f = self.fields
    if "completion_ids" in f:
      ids = np.asarray(f["completion_ids"])
      f.setdefault("completion_mask", eos_mask(ids, f.get("eos_id")))
      if "prompt_ids" in f:
        f.setdefault("prompt_mask", np.ones(np.shape(f["prompt_ids"]), np.int32))
      if "truncated" not in f and f.get("eos_id") is not None:
        f["truncated"] = truncated_rows(ids, f["completion_mask"], f["eos_id"])

  @property
  def batch_size(self) -> int:
    if self._text is not None:
      return len(self._text[1])
    return int(np.asarray(self.fields["completion_ids"]).shape[0])

  def text(self) -> tuple[list[str], list[str]]:
    if self._text is None:
      f = self.fields
      tokenizer = f.get("tokenizer")
      if tokenizer is None:
        raise ValueError("a text reward function got token ids and no `tokenizer` field to "
                         "decode them")
      eos = [f["eos_id"]] if f.get("eos_id") is not None else []
      self._text = (decode_rows(tokenizer, f["prompt_ids"], f["prompt_mask"]),
                    decode_rows(tokenizer, f["completion_ids"], f["completion_mask"], eos))
    return self._text

  def ids(self):
    f = self.fields
    if "completion_ids" not in f:
      raise ValueError("an ids reward function got text and no `prompt_ids` / "
                       "`completion_ids` fields")
    return f.get("prompt_ids"), f["completion_ids"]

  def call(self, fn) -> np.ndarray:
    """``fn``'s rewards float32 [B], with the inputs it wants."""
    wants = reward_inputs(fn)
    if wants == IDS:
      prompts, completions = self.ids()
    elif wants == TEXT:
      prompts, completions = self.text()
    else:  # "any": whichever form came
      prompts, completions = self._text if self._text is not None else self.ids()
    values = np.asarray(fn(prompts, completions, **self.fields), np.float32)
    if values.shape != (self.batch_size,):
      raise ValueError(f"reward function {getattr(fn, '__name__', fn)!r} returned shape "
                       f"{values.shape}, expected ({self.batch_size},)")
    return values


def call_reward(fn, prompts, completions, **fields) -> np.ndarray:
  """``fn``'s rewards float32 [B], converting text / ids to what ``fn`` takes (module
  docstring)."""
  return RewardInputs(prompts, completions, fields).call(fn)


def with_fields(fn, **extra) -> Callable:
  """``fn`` with ``extra`` fields added to every call (they win over the caller's), taking
  text or ids: e.g. ``with_fields(my_text_reward, tokenizer=tokenizer)`` under a trainer that
  passes ids and no tokenizer."""

  def wrapped(prompts, completions, **fields):
    return call_reward(fn, prompts, completions, **{**fields, **extra})

  wrapped.reward_inputs = "any"
  wrapped.__name__ = getattr(fn, "__name__", "reward")
  return wrapped


def answer_fields(batch, num_samples: int = 1, tokenizer=None) -> dict[str, Any]:
  """The gold-answer fields of a prompt batch (``D.AnswerPromptBatch``), each row repeated
  ``num_samples`` times (prompt-major, as ``generate(num_samples=G)`` orders samples):
  ``answer_tokens``, ``answer_mask`` and, with a tokenizer, ``answers`` (text). ``{}`` for a
  batch without answers."""
  if getattr(batch, "answer_tokens", None) is None:
    return {}
  tokens = np.repeat(np.asarray(batch.answer_tokens), num_samples, axis=0)
  mask = np.repeat(np.asarray(batch.answer_mask), num_samples, axis=0)
  out = {"answer_tokens": tokens, "answer_mask": mask}
  if tokenizer is not None:
    out["answers"] = decode_rows(tokenizer, tokens, mask)
  return out


def rollout_inputs(batch, sample, *, num_samples: int = 1, eos_id: int,
                   max_new_tokens: int | None = None, tokenizer=None, **extra):
  """``(prompts, completions, fields)`` for ``reward(prompts, completions, **fields)`` from
  a prompt batch (``PromptBatch`` / ``AnswerPromptBatch``, [B0] prompts) and the sampler's
  output on it (``SampleOutput`` with ``B0 * num_samples`` rows, prompt-major). Positional
  inputs are ids; ``extra`` adds fields."""
  prompt_ids = np.repeat(np.asarray(batch.tokens), num_samples, axis=0)
  prompt_mask = np.repeat(np.asarray(batch.attention_mask), num_samples, axis=0)
  completion_ids = np.asarray(sample.tokens)
  completion_mask = np.asarray(sample.response_mask)
  if completion_ids.shape[0] != prompt_ids.shape[0]:
    raise ValueError(f"{completion_ids.shape[0]} completions for {batch.tokens.shape[0]} "
                     f"prompts x {num_samples} samples")
  fields = {"prompt_mask": prompt_mask, "completion_mask": completion_mask,
            "truncated": truncated_rows(completion_ids, completion_mask, eos_id),
            "eos_id": int(eos_id),
            "max_new_tokens": int(max_new_tokens or completion_ids.shape[1]),
            **answer_fields(batch, num_samples, tokenizer), **extra}
  if tokenizer is not None:
    fields["tokenizer"] = tokenizer
  return prompt_ids, completion_ids, fields

"""Built-in reward functions: exact answer match, format, length penalty, DAPO's soft overlong
punishment. Each is ``(prompts, completions, **fields) -> float32 [B]`` (``rewards.base``);
the factories (``format_reward(...)``, ``length_penalty(...)``, ...) return one.

Lengths ``L`` are real completion tokens, EOS included (``completion_mask`` row sums; TRL's
``len(completion_ids)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from jaxalign.data.verifiable_task import check_answers
from jaxalign.rewards.base import completion_lengths, ids_reward


def _normalise(text: str) -> str:
  return " ".join(str(text).split())


def _not_truncated(truncated, count: int) -> np.ndarray:
  return np.ones(count, bool) if truncated is None else ~np.asarray(truncated, bool)


def exact_match(prompts, completions, *, answers, truncated=None, **_) -> np.ndarray:
  """Text exact match: ``r = 1`` if the completion equals its gold answer up to whitespace
  (``" ".join(text.split())`` on both) and ended with EOS (``truncated`` False, when given),
  else ``r = 0``."""
  if len(answers) != len(completions):
    raise ValueError(f"{len(answers)} answers for {len(completions)} completions")
  ok = _not_truncated(truncated, len(completions))
  return np.array([float(k and _normalise(c) == _normalise(a))
                   for c, a, k in zip(completions, answers, ok)], np.float32)


@ids_reward
def exact_match_ids(prompts, completions, *, completion_mask, answer_tokens, answer_mask,
                    eos_id, require_eos: bool = True, **_) -> np.ndarray:
  """Exact match on ids: ``r = 1`` if the completion's first ``n = answer_mask.sum()`` real
  tokens are the answer's and token ``n`` is EOS (``D.check_answers``), else ``r = 0``."""
  return check_answers(completions, completion_mask, answer_tokens, answer_mask, eos_id,
                       require_eos).astype(np.float32)


def format_reward(pattern: str, *, flags: int = 0, require_eos: bool = True):
  """A text reward: ``r = 1`` if ``re.fullmatch(pattern, completion.strip())`` (and, with
  ``require_eos``, the completion ended with EOS: ``truncated`` False), else ``r = 0``.
  E.g. ``format_reward(r"\\d( \\d)*")``: the verifiable task's answers, digits and spaces."""
  compiled = re.compile(pattern, flags)

  def fn(prompts, completions, *, truncated=None, **_) -> np.ndarray:
    ok = _not_truncated(truncated if require_eos else None, len(completions))
    return np.array([float(k and compiled.fullmatch(c.strip()) is not None)
                     for c, k in zip(completions, ok)], np.float32)

  fn.__name__ = f"format_reward({pattern!r})"
  return fn


def token_format(allowed_ids: Iterable[int], *, min_tokens: int = 1,
                 require_eos: bool = True):
  """An ids reward: ``r = 1`` if every real token before the first EOS is in
  ``allowed_ids``, there are at least ``min_tokens`` of them, and (``require_eos``) EOS came;
  else ``r = 0``. E.g. ``token_format(DIGIT_IDS)``: an answer of digits only."""
  allowed = np.asarray(sorted({int(i) for i in allowed_ids}), np.int64)

  @ids_reward
  def fn(prompts, completions, *, completion_mask, eos_id, **_) -> np.ndarray:
    ids = np.asarray(completions)
    mask = np.asarray(completion_mask).astype(bool)
    is_eos = mask & (ids == eos_id)
    has_eos = is_eos.any(axis=1)
    before = mask & (np.cumsum(is_eos, axis=1) == 0)  # real tokens before the first EOS
    bad = before & ~np.isin(ids, allowed)
    ok = ~bad.any(axis=1) & (before.sum(axis=1) >= min_tokens)
    return (ok & (has_eos | (not require_eos))).astype(np.float32)

  fn.__name__ = "token_format"
  return fn


def length_penalty(coef: float = 0.01, *, free_tokens: int = 0):
  """An ids reward: ``r = -coef * max(0, L - free_tokens)`` (``L`` real tokens, EOS
  included; ragged id lists without a mask: their lengths)."""
  if coef < 0 or free_tokens < 0:
    raise ValueError(f"coef and free_tokens must be >= 0, got {coef}, {free_tokens}")

  @ids_reward
  def fn(prompts, completions, *, completion_mask=None, **_) -> np.ndarray:
    lengths = completion_lengths(completions, completion_mask)
    return (-coef * np.maximum(0, lengths - free_tokens)).astype(np.float32)

  fn.__name__ = f"length_penalty({coef})"
  return fn


def soft_overlong_punishment(max_length: int, cache_length: int):
  """DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, Eq. 13), an ids
  reward of the completion length ``L`` (EOS included), ``L_max = max_length``,
  ``L_cache = cache_length``::

      r = 0                                   if L <= L_max - L_cache
      r = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
      r = -1                                  if L > L_max

  (TRL's ``get_soft_overlong_punishment(max_completion_len, soft_punish_cache)``). With
  ``max_new_tokens = L_max`` the last case never occurs; a completion that uses the whole
  budget gets -1 from the middle case.
  """
  if not 0 < cache_length <= max_length:
    raise ValueError(f"need 0 < cache_length <= max_length, got {cache_length}, {max_length}")
  start = max_length - cache_length

  @ids_reward
  def fn(prompts, completions, *, completion_mask=None, **_) -> np.ndarray:
    lengths = completion_lengths(completions, completion_mask).astype(np.float64)
    ramp = (start - lengths) / cache_length
    out = np.where(lengths <= start, 0.0, np.where(lengths <= max_length, ramp, -1.0))
    return out.astype(np.float32)

  fn.__name__ = f"soft_overlong_punishment({max_length}, {cache_length})"
  return fn

"""Records -> token ids under a length budget, with a report of everything skipped or cut.

Encoding. Plain text: ``prompt = [BOS if tokenizer.add_bos] + encode(prompt)``,
``response = encode(response) + [EOS]``. Chat: the prompt is rendered with the generation
prompt, the response is what the full conversation adds (:func:`jaxalign.data.chat.split_chat`);
EOS is appended unless the rendered response already ends with it (trailing whitespace after
a final EOS is dropped).

Truncation policy (``max_length`` = T budget, ``max_prompt_length`` default ``T // 2``):

1. Responses are never cut to make room for the prompt. The prompt is cut from the LEFT
   (keeping its end, and its BOS) only if the row does not fit, and never below
   ``max_prompt_length`` tokens; each cut prompt is flagged ``prompt_truncated``.
2. If the longest response (with EOS) still does not fit, ``on_overflow`` decides:
   ``"skip"`` (default) drops the row and counts it as ``too_long``; ``"raise"`` raises a
   ``DataError``; ``"truncate_prompt"`` cuts the prompt further (below ``max_prompt_length``,
   keeping at least one token) so the responses stay whole, and skips the row as
   ``too_long`` only if a response alone leaves no room; ``"truncate_response"`` (or
   ``"truncate"``) keeps the START of each response that is too long, which loses its EOS:
   the row's ``*_truncated`` flag is set and ``response_truncated`` counted.
3. A pair whose chosen and rejected ids are equal (after cutting) is ``identical_responses``.

Other bad rows follow ``on_error`` (``"raise"`` or ``"skip"``), see :mod:`jaxalign.data.report`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.data import report as reasons
from jaxalign.data.chat import render_chat, split_chat
from jaxalign.data.encoded import (PreferenceRows, PromptRows, SFTRows, UnpairedRows,
                                   check_pad)
from jaxalign.data.report import DataError, DataReport, check_policy, handle

OVERFLOW_POLICIES = ("skip", "raise", "truncate_prompt", "truncate_response", "truncate")
TRUNCATING = ("truncate_prompt", "truncate_response", "truncate")  # a prompt dataset cuts


def encode_prompt(prompt, tokenizer) -> np.ndarray:
  if isinstance(prompt, str):
    bos = [tokenizer.bos_id] if tokenizer.add_bos else []
    ids = bos + tokenizer.encode(prompt)
  else:
    ids = tokenizer.encode(render_chat(prompt, tokenizer, add_generation_prompt=True))
  return np.asarray(ids, np.int32)


def encode_response(prompt, response, tokenizer) -> np.ndarray:
  """Response ids ending in EOS."""
  if isinstance(response, str):
    return np.asarray(tokenizer.encode(response) + [tokenizer.eos_id], np.int32)
  _, text = split_chat(prompt, response, tokenizer)
  eos_token = tokenizer.special_tokens.get("eos_token") or None
  if eos_token and text.rstrip().endswith(eos_token):
    text = text.rstrip()
  ids = tokenizer.encode(text)
  if not ids or ids[-1] != tokenizer.eos_id:
    ids = ids + [tokenizer.eos_id]
  return np.asarray(ids, np.int32)


def _left_truncate(prompt: np.ndarray, keep: int, bos_id: int | None) -> np.ndarray:
  if keep >= len(prompt):
    return prompt
  if bos_id is not None and len(prompt) and prompt[0] == bos_id and keep > 1:
    return np.concatenate([prompt[:1], prompt[len(prompt) - keep + 1:]])
  return prompt[len(prompt) - keep:]


def fit_row(prompt: np.ndarray, responses: list[np.ndarray], max_length: int,
            max_prompt_length: int, on_overflow: str, bos_id: int | None = None):
  """Apply the truncation policy to one row: ``(prompt, responses, prompt_cut, cut_flags)``.

  Raises a ``too_long`` DataError when the row cannot fit under ``on_overflow``.
  """
  longest = max(len(r) for r in responses)
  keep = min(len(prompt), max(max_prompt_length, max_length - longest))
  if on_overflow == "truncate_prompt" and keep + longest > max_length:
    keep = max_length - longest  # below max_prompt_length: the responses stay whole
    if keep < 1:
      raise DataError(reasons.TOO_LONG, f"response ({longest} tokens with EOS) leaves no "
                      f"room for a prompt token in max_length {max_length}")
  prompt_cut = keep < len(prompt)
  prompt = _left_truncate(prompt, keep, bos_id)
  budget = max_length - len(prompt)
  if longest <= budget:
    return prompt, responses, prompt_cut, [False] * len(responses)
  if on_overflow not in ("truncate_response", "truncate"):
    raise DataError(reasons.TOO_LONG, f"prompt ({len(prompt)} tokens after cutting) + "
                    f"response ({longest} tokens with EOS) > max_length {max_length}")
  return prompt, [r[:budget] for r in responses], prompt_cut, [len(r) > budget
                                                              for r in responses]


def _check_budget(tokenizer, max_length: int, max_prompt_length: int | None, on_overflow: str,
                  on_error: str) -> int:
  check_policy(on_error)
  check_pad(tokenizer.pad_id, tokenizer.eos_id)
  if on_overflow not in OVERFLOW_POLICIES:
    raise ValueError(f"on_overflow must be one of {OVERFLOW_POLICIES}, got {on_overflow!r}")
  max_prompt_length = max_length // 2 if max_prompt_length is None else max_prompt_length
  if not 0 < max_prompt_length < max_length:
    raise ValueError(f"need 0 < max_prompt_length ({max_prompt_length}) < max_length "
                     f"({max_length})")
  return max_prompt_length


def _policy(error: DataError, on_error: str, on_overflow: str) -> str:
  return ("raise" if on_overflow == "raise" else "skip") if error.reason == reasons.TOO_LONG \
      else on_error


def _rows(records: Sequence[dict], on_error: str, report: DataReport):
  """Yield ``(location, record)``, handling records that fail to load (a RecordSource)."""
  for index in range(len(records)):
    try:
      record = records[index]
    except DataError as error:
      handle(error, on_error, report)
      continue
    yield record.get("source") or f"records[{index}]", record


def tokenize_preferences(records: Sequence[dict], tokenizer, max_length: int,
                         max_prompt_length: int | None = None, on_overflow: str = "skip",
                         on_error: str = "raise") -> tuple[PreferenceRows, DataReport]:
  """Preference records -> :class:`PreferenceRows` fitting ``max_length``, and a report."""
  max_prompt_length = _check_budget(tokenizer, max_length, max_prompt_length, on_overflow,
                                    on_error)
  report = DataReport()
  fields = ("prompts", "chosen", "rejected", "weights", "scores", "chosen_truncated",
            "rejected_truncated", "sources")
  columns = {field: [] for field in fields}
  for location, record in _rows(records, on_error, report):
    try:
      prompt = encode_prompt(record["prompt"], tokenizer)
      responses = [encode_response(record["prompt"], record[field], tokenizer)
                   for field in ("chosen", "rejected")]
      prompt, (chosen, rejected), prompt_cut, cut = fit_row(
          prompt, responses, max_length, max_prompt_length, on_overflow, tokenizer.bos_id)
      if np.array_equal(chosen, rejected):
        raise DataError(reasons.IDENTICAL_RESPONSES, "chosen and rejected have the same ids")
    except DataError as error:
      handle(error.at(location), _policy(error, on_error, on_overflow), report)
      continue
    _flag(report, location, prompt_cut, cut)
    values = (prompt, chosen, rejected, record["weight"], record["score"], cut[0], cut[1],
              location)
    for field, value in zip(fields, values):
      columns[field].append(value)
  rows = PreferenceRows(
      columns["prompts"], columns["chosen"], columns["rejected"],
      weights=np.asarray(columns["weights"], np.float32),
      scores=np.asarray(columns["scores"], np.float32),
      chosen_truncated=np.asarray(columns["chosen_truncated"], bool),
      rejected_truncated=np.asarray(columns["rejected_truncated"], bool),
      pad_id=tokenizer.pad_id, max_length=max_length, sources=columns["sources"])
  return rows, report


def _tokenize_single(records, tokenizer, max_length, max_prompt_length, on_overflow, on_error,
                     field: str, extra: tuple[str, ...] = ()):
  """Rows of one response ``record[field]``: (columns, report), ``extra`` record keys kept."""
  max_prompt_length = _check_budget(tokenizer, max_length, max_prompt_length, on_overflow,
                                    on_error)
  report = DataReport()
  columns = {key: [] for key in ("prompts", "responses", "truncated", "sources") + extra}
  for location, record in _rows(records, on_error, report):
    try:
      prompt = encode_prompt(record["prompt"], tokenizer)
      response = encode_response(record["prompt"], record[field], tokenizer)
      prompt, (response,), prompt_cut, cut = fit_row(
          prompt, [response], max_length, max_prompt_length, on_overflow, tokenizer.bos_id)
    except DataError as error:
      handle(error.at(location), _policy(error, on_error, on_overflow), report)
      continue
    _flag(report, location, prompt_cut, cut)
    for key, value in zip(("prompts", "responses", "truncated", "sources"),
                          (prompt, response, cut[0], location)):
      columns[key].append(value)
    for key in extra:
      columns[key].append(record[key])
  return columns, report


def tokenize_sft(records: Sequence[dict], tokenizer, max_length: int,
                 max_prompt_length: int | None = None, on_overflow: str = "skip",
                 on_error: str = "raise") -> tuple[SFTRows, DataReport]:
  """SFT records -> :class:`SFTRows` fitting ``max_length``, and a report."""
  columns, report = _tokenize_single(records, tokenizer, max_length, max_prompt_length,
                                     on_overflow, on_error, "response")
  return SFTRows(columns["prompts"], columns["responses"], np.asarray(columns["truncated"], bool),
                 tokenizer.pad_id, max_length, columns["sources"]), report


def tokenize_unpaired(records: Sequence[dict], tokenizer, max_length: int,
                      max_prompt_length: int | None = None, on_overflow: str = "skip",
                      on_error: str = "raise") -> tuple[UnpairedRows, DataReport]:
  """Unpaired (KTO) records -> :class:`UnpairedRows` fitting ``max_length``, and a report."""
  columns, report = _tokenize_single(records, tokenizer, max_length, max_prompt_length,
                                     on_overflow, on_error, "completion", ("label", "weight"))
  return UnpairedRows(columns["prompts"], columns["responses"],
                      desirable=np.asarray(columns["label"], bool),
                      weights=np.asarray(columns["weight"], np.float32),
                      truncated=np.asarray(columns["truncated"], bool),
                      pad_id=tokenizer.pad_id, max_length=max_length,
                      sources=columns["sources"]), report


def tokenize_prompts(records: Sequence[dict], tokenizer, max_prompt_length: int,
                     on_overflow: str = "truncate",
                     on_error: str = "raise") -> tuple[PromptRows, DataReport]:
  """Prompt records -> :class:`PromptRows` of at most ``max_prompt_length`` ids.

  A longer prompt is cut from the left (``"truncate"`` or ``"truncate_prompt"`` /
  ``"truncate_response"``, flagged), skipped or raises.
  """
  check_policy(on_error)
  if on_overflow not in OVERFLOW_POLICIES:
    raise ValueError(f"on_overflow must be one of {OVERFLOW_POLICIES}, got {on_overflow!r}")
  report, prompts, truncated, sources = DataReport(), [], [], []
  for location, record in _rows(records, on_error, report):
    try:
      prompt = encode_prompt(record["prompt"], tokenizer)
      if len(prompt) > max_prompt_length and on_overflow not in TRUNCATING:
        raise DataError(reasons.TOO_LONG, f"prompt has {len(prompt)} tokens > "
                        f"max_prompt_length {max_prompt_length}")
    except DataError as error:
      handle(error.at(location), _policy(error, on_error, on_overflow), report)
      continue
    cut = len(prompt) > max_prompt_length
    _flag(report, location, cut, [])
    prompts.append(_left_truncate(prompt, max_prompt_length, tokenizer.bos_id))
    truncated.append(cut)
    sources.append(location)
  return PromptRows(prompts, np.asarray(truncated, bool), tokenizer.pad_id, max_prompt_length,
                    sources), report


def _flag(report: DataReport, location: str, prompt_cut: bool, cut: list[bool]) -> None:
  report.keep()
  if prompt_cut:
    report.flag(reasons.PROMPT_TRUNCATED, location)
  if any(cut):
    report.flag(reasons.RESPONSE_TRUNCATED, location)

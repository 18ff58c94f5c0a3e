"""Raw rows (JSON, Parquet, TFDS examples) -> validated records of one of three kinds.

A record is a plain dict. Text and chat forms share the keys; in the chat form the values are
lists of messages ``{"role": str, "content": str}``:

- ``"preference"``: ``{"prompt", "chosen", "rejected", "weight", "score", "source"}``
- ``"prompt"``: ``{"prompt", "source"}``
- ``"sft"``: ``{"prompt", "response", "source"}`` (a preference row trains on its ``chosen``)
- ``"unpaired"`` (KTO): ``{"prompt", "completion", "label", "weight", "source"}``, ``label``
  True for a desirable completion, False for an undesirable one

``source`` is where the row came from (``file:line``). Strings may arrive as ``bytes`` (TFDS
returns bytes): they are decoded as strict UTF-8, and invalid bytes are a ``DataError``. Every
problem raises a :class:`~jaxalign.data.report.DataError` naming the reason; the caller
applies the skip/raise policy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxalign.data import report as reasons
from jaxalign.data.report import DataError

KINDS = ("preference", "prompt", "sft", "unpaired")
Message = dict[str, str]
HH_ASSISTANT_MARKER = "\n\nAssistant:"


def to_text(value: Any, field: str) -> str:
  """``str`` / ``bytes`` / numpy string scalar -> ``str`` (strict UTF-8)."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, (bytes, np.bytes_)):
    try:
      return bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
      raise DataError(reasons.INVALID_UTF8, f"field {field!r}: {error}") from None
  if isinstance(value, str):
    return str(value)
  raise DataError(reasons.WRONG_TYPE, f"field {field!r} must be a string, got "
                  f"{type(value).__name__}")


def to_messages(value: Any, field: str) -> list[Message]:
  """A list of ``{"role", "content"}`` dicts, or TFDS's ``{"role": [...], "content": [...]}``."""
  if _is_columns(value):
    roles, contents = list(value["role"]), list(value["content"])
    value = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
  if isinstance(value, np.ndarray):
    value = list(value)
  if not isinstance(value, list):
    raise DataError(reasons.WRONG_TYPE, f"field {field!r} must be a list of messages, got "
                    f"{type(value).__name__}")
  messages = []
  for position, message in enumerate(value):
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
      raise DataError(reasons.WRONG_TYPE, f"field {field!r}[{position}] must be a dict with "
                      f"'role' and 'content'")
    messages.append({"role": to_text(message["role"], f"{field}[{position}].role"),
                     "content": to_text(message["content"], f"{field}[{position}].content")})
  return messages


def _to_float(value: Any, field: str) -> float:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise DataError(reasons.WRONG_TYPE, f"field {field!r} must be a number, got "
                    f"{type(value).__name__}")
  return float(value)


def _require(row: dict, field: str) -> Any:
  if field not in row or row[field] is None:
    raise DataError(reasons.MISSING_FIELD, f"field {field!r} is missing (row has "
                    f"{sorted(row)})")
  return row[field]


def _is_columns(value: Any) -> bool:
  """TFDS's form of a message sequence: ``{"role": [...], "content": [...]}``."""
  return (isinstance(value, dict) and set(value) == {"role", "content"}
          and all(isinstance(v, (list, tuple, np.ndarray)) for v in value.values()))


def _is_chat(value: Any) -> bool:
  return isinstance(value, (list, np.ndarray)) or _is_columns(value)


def is_empty(value: str | list[Message]) -> bool:
  """Empty text, or messages that are all blank."""
  if isinstance(value, str):
    return not value.strip()
  return not any(message["content"].strip() for message in value)


def _text_or_messages(value: Any, field: str) -> str | list[Message]:
  return to_messages(value, field) if _is_chat(value) else to_text(value, field)


def _split_shared_prefix(chosen: list[Message], rejected: list[Message]):
  """Messages both conversations start with are the prompt (HH-RLHF / TRL implicit prompt)."""
  shared = 0
  while (shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]):
    shared += 1
  return chosen[:shared], chosen[shared:], rejected[shared:]


def _split_hh_text(chosen: str, rejected: str):
  """HH-RLHF text pairs: the prompt is the shared prefix up to its last ``Assistant:`` turn."""
  shared = 0
  while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
    shared += 1
  cut = chosen.rfind(HH_ASSISTANT_MARKER, 0, shared)
  if cut < 0:
    raise DataError(reasons.MISSING_FIELD, "field 'prompt' is missing and chosen/rejected "
                    f"share no {HH_ASSISTANT_MARKER!r} turn to split at")
  cut += len(HH_ASSISTANT_MARKER)
  return chosen[:cut], chosen[cut:], rejected[cut:]


def _chat_pair(prompt: Any, chosen: list[Message], rejected: list[Message]):
  if _is_chat(prompt):
    prompt_messages = to_messages(prompt, "prompt")
    size = len(prompt_messages)
    if chosen[:size] == prompt_messages and rejected[:size] == prompt_messages:
      chosen, rejected = chosen[size:], rejected[size:]
    return prompt_messages, chosen, rejected
  shared, chosen, rejected = _split_shared_prefix(chosen, rejected)
  if prompt is None or shared:
    return shared, chosen, rejected
  return [{"role": "user", "content": to_text(prompt, "prompt")}], chosen, rejected


def _weight(row: dict) -> float:
  weight = _to_float(row["weight"], "weight") if row.get("weight") is not None else 1.0
  if not (math.isfinite(weight) and weight >= 0):
    raise DataError(reasons.BAD_VALUE, f"weight must be finite and >= 0, got {weight}")
  return weight


def _score(row: dict) -> float:
  if row.get("score") is not None:
    return _to_float(row["score"], "score")
  if row.get("score_chosen") is not None and row.get("score_rejected") is not None:
    return _to_float(row["score_chosen"], "score_chosen") - _to_float(
        row["score_rejected"], "score_rejected")
  return math.nan


def preference_record(row: dict, source: str = "") -> dict:
  """Validate one preference row (text or chat form) into a preference record."""
  chosen, rejected = _require(row, "chosen"), _require(row, "rejected")
  prompt = row.get("prompt")
  if _is_chat(chosen) and _is_chat(rejected):
    prompt, chosen, rejected = _chat_pair(prompt, to_messages(chosen, "chosen"),
                                          to_messages(rejected, "rejected"))
  elif _is_chat(chosen) or _is_chat(rejected):
    raise DataError(reasons.WRONG_TYPE, "'chosen' and 'rejected' must both be strings or "
                    "both be message lists")
  else:
    chosen, rejected = to_text(chosen, "chosen"), to_text(rejected, "rejected")
    if prompt is None:
      prompt, chosen, rejected = _split_hh_text(chosen, rejected)
    else:
      prompt = to_text(prompt, "prompt")
  weight = _weight(row)
  record = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "weight": weight,
            "score": _score(row), "source": source}
  _check_nonempty(record, ("chosen", "rejected"))
  if chosen == rejected:
    raise DataError(reasons.IDENTICAL_RESPONSES, "'chosen' and 'rejected' are identical")
  return record


def prompt_record(row: dict, source: str = "") -> dict:
  """Validate one prompt row: ``{"prompt": str | messages}`` or ``{"messages": [...]}``."""
  value = row["messages"] if row.get("prompt") is None and "messages" in row else _require(
      row, "prompt")
  record = {"prompt": _text_or_messages(value, "prompt"), "source": source}
  _check_nonempty(record, ())
  return record


def _split_messages(value: Any, field: str):
  """A conversation ending with the assistant: (the messages before it, its last message)."""
  messages = to_messages(value, field)
  if not messages or messages[-1]["role"] != "assistant":
    raise DataError(reasons.BAD_VALUE, f"the last of {field!r} must be the assistant's")
  return messages[:-1], messages[-1:]


def _prompt_and(row: dict, field: str):
  """(prompt, row[field]), both text or both message lists."""
  prompt = _text_or_messages(_require(row, "prompt"), "prompt")
  response = _text_or_messages(_require(row, field), field)
  if isinstance(prompt, str) != isinstance(response, str):
    raise DataError(reasons.WRONG_TYPE, f"'prompt' and {field!r} must both be strings or "
                    "both be message lists")
  return prompt, response


def _chosen_as_sft(row: dict, source: str):
  """(prompt, response) of a preference row used for SFT: its prompt and ``chosen``."""
  if row.get("rejected") is not None:
    pair = preference_record(row, source)  # the same prompt split as for DPO
    return pair["prompt"], pair["chosen"]
  if row.get("prompt") is None and _is_chat(row["chosen"]):
    return _split_messages(row["chosen"], "chosen")
  return _prompt_and(row, "chosen")


def sft_record(row: dict, source: str = "") -> dict:
  """Validate one SFT row: ``{"prompt", "response"}`` (or ``"completion"``), or ``{"messages"}``
  whose last message (the assistant's) is the response. A preference row (``chosen``, no
  response) is SFT on its prompt and ``chosen`` (the prompt split as for preference rows)."""
  if row.get("chosen") is not None and all(
      row.get(field) is None for field in ("response", "completion", "messages")):
    prompt, response = _chosen_as_sft(row, source)
  elif row.get("prompt") is None and "messages" in row:
    prompt, response = _split_messages(row["messages"], "messages")
  else:
    response_field = "completion" if row.get("response") is None and "completion" in row \
        else "response"
    prompt, response = _prompt_and(row, response_field)
  record = {"prompt": prompt, "response": response, "source": source}
  _check_nonempty(record, ("response",))
  return record


def _label(value: Any) -> bool:
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
    return bool(value)
  raise DataError(reasons.WRONG_TYPE, f"field 'label' must be true or false, got {value!r}")


def unpaired_record(row: dict, source: str = "") -> dict:
  """Validate one unpaired (KTO) row, TRL's unpaired form: ``{"prompt", "completion",
  "label"}`` (``"response"`` is accepted for ``"completion"``), text or message lists, with an
  optional ``weight``; ``label`` is true for a desirable completion."""
  field = "response" if row.get("completion") is None and "response" in row else "completion"
  prompt, completion = _prompt_and(row, field)
  label = _label(_require(row, "label"))
  weight = _weight(row)
  record = {"prompt": prompt, "completion": completion, "label": label, "weight": weight,
            "source": source}
  _check_nonempty(record, ("completion",))
  return record


def _check_nonempty(record: dict, responses: tuple[str, ...]) -> None:
  if is_empty(record["prompt"]):
    raise DataError(reasons.EMPTY_PROMPT, "the prompt is empty")
  for field in responses:
    if is_empty(record[field]):
      raise DataError(reasons.EMPTY_RESPONSE, f"{field!r} is empty")


RECORD_PARSERS = {"preference": preference_record, "prompt": prompt_record, "sft": sft_record,
                  "unpaired": unpaired_record}


def parse_record(row: Any, kind: str, source: str = "") -> dict:
  """Dispatch on ``kind``; a row that is not a JSON object is a ``wrong_type`` error."""
  if kind not in RECORD_PARSERS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  if not isinstance(row, dict):
    raise DataError(reasons.WRONG_TYPE, f"a row must be an object, got {type(row).__name__}")
  return RECORD_PARSERS[kind](row, source)


def is_chat_record(record: dict) -> bool:
  return not isinstance(record["prompt"], str)

"""Tokenizers behind one small protocol: a Hugging Face ``tokenizer.json`` folder, or bytes.

Every tokenizer has ``encode(str) -> list[int]`` (never adds special tokens), ``decode``,
``eos_id``, ``pad_id`` (always different from ``eos_id``), ``bos_id`` (or None), ``add_bos``
(prepend BOS to plain-text prompts), ``vocab_size``, ``chat_template`` (a Jinja string or
None) and ``special_tokens`` (``bos_token``, ``eos_token``, ... strings for the template).

Pad policy: EOS is a real, scored token and pad never is, so they must differ. A folder whose
``pad_token`` is missing or equals its ``eos_token`` (GPT-2) gets the first of
``PAD_CANDIDATES`` found in its vocabulary, with a warning; if there is none, loading raises
``TokenizerError`` and asks for ``pad_token=`` or ``pad_id=``. Any id other than EOS is safe:
masks come from lengths, so the pad id is never attended or scored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Protocol

PAD_CANDIDATES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>",
                  "<unk>", "[UNK]", "<|unk|>")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class TokenizerError(ValueError):
  """A tokenizer folder that cannot be used as is (missing file, no EOS, pad == EOS, ...)."""


class Tokenizer(Protocol):
  vocab_size: int
  eos_id: int
  pad_id: int
  bos_id: int | None
  add_bos: bool
  chat_template: str | None
  special_tokens: dict[str, str]

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids) -> str:
    ...


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, then ``pad=256``, ``eos=257``, ``bos=258``; ``vocab_size=259``.

  Needs no files. A model for it needs ``vocab_size >= 259`` (e.g. ``tiny_gpt2(vocab_size=259,
  eos_token_id=257, bos_token_id=258)``). ``decode`` drops the special ids.
  """

  add_bos: bool = False
  chat_template: str | None = None
  vocab_size: int = 259
  pad_id: int = 256
  eos_id: int = 257
  bos_id: int | None = 258

  @property
  def special_tokens(self) -> dict[str, str]:
    return {"bos_token": "", "eos_token": "", "pad_token": ""}

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def _token_string(value: Any) -> str | None:
  """tokenizer_config values are strings or AddedToken dicts ``{"content": ...}``."""
  if isinstance(value, dict):
    return value.get("content")
  return value


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def read_chat_template(value: str | None) -> str | None:
  """A chat template given as a Jinja string, or as the path of a file holding one
  (``.jinja``/``.txt`` text, or a ``.json`` with a ``"chat_template"`` entry)."""
  if value is None or "{{" in value or "{%" in value:
    return value
  if not os.path.isfile(value):
    raise TokenizerError(f"chat_template {value!r} is neither a file nor a Jinja template "
                         "(no '{{' or '{%' in it)")
  if value.endswith(".json"):
    template = _read_json(value).get("chat_template")
    if template is None:
      raise TokenizerError(f"{value}: has no 'chat_template' entry")
    return _named_template(template)
  with open(value, encoding="utf-8") as handle:
    return handle.read()


def _named_template(template):
  if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use"}]
    named = {entry["name"]: entry["template"] for entry in template}
    template = named.get("default", next(iter(named.values()), None))
  return template


def _read_chat_template(folder: str, config: dict) -> str | None:
  template = config.get("chat_template")
  if template is None and os.path.exists(os.path.join(folder, "chat_template.jinja")):
    with open(os.path.join(folder, "chat_template.jinja"), encoding="utf-8") as handle:
      template = handle.read()
  if template is None:
    template = _read_json(os.path.join(folder, "chat_template.json")).get("chat_template")
  return _named_template(template)


class HFTokenizer:
  """A Hugging Face fast tokenizer (``tokenizer.json``) plus its ``tokenizer_config.json``.

  Use :meth:`from_folder`. ``encode`` calls ``encode(text, add_special_tokens=False)``: BOS is
  added by the batcher when ``add_bos`` (from ``add_bos_token`` in the config) is set, and
  chat templates write their own special tokens.
  """

  def __init__(self, backend, eos_token: str, pad_token: str | None, pad_id: int | None,
               bos_token: str | None, add_bos: bool, chat_template: str | None,
               special_tokens: dict[str, str], name: str = "tokenizer"):
    self.backend = backend
    self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
    self.eos_id = self._id(eos_token, "eos_token", name)
    self.bos_id = self._id(bos_token, "bos_token", name) if bos_token else None
    self.add_bos = bool(add_bos and self.bos_id is not None)
    self.chat_template = chat_template
    self.special_tokens = dict(special_tokens)
    self.pad_id = self._choose_pad(pad_token, pad_id, name)
    self.special_tokens["pad_token"] = backend.id_to_token(self.pad_id) or ""

  def _id(self, token: str, field: str, name: str) -> int:
    token_id = self.backend.token_to_id(token)
    if token_id is None:
      raise TokenizerError(f"{name}: {field} {token!r} is not in the vocabulary")
    return token_id

  def _choose_pad(self, pad_token: str | None, pad_id: int | None, name: str) -> int:
    if pad_id is None and pad_token is not None:
      pad_id = self._id(pad_token, "pad_token", name)
    if pad_id is not None and not 0 <= pad_id < self.vocab_size:
      raise TokenizerError(f"{name}: pad_id {pad_id} is outside the vocabulary "
                           f"(0..{self.vocab_size - 1})")
    if pad_id is not None and pad_id != self.eos_id:
      return int(pad_id)
    for candidate in PAD_CANDIDATES:
      candidate_id = self.backend.token_to_id(candidate)
      if candidate_id is not None and candidate_id != self.eos_id:
        warnings.warn(f"{name}: pad is {'missing' if pad_id is None else 'the EOS token'}; "
                      f"padding with {candidate!r} (id {candidate_id}) instead")
        return candidate_id
    raise TokenizerError(
        f"{name}: pad is {'missing' if pad_id is None else 'equal to EOS'} and none of "
        f"{PAD_CANDIDATES} is in the vocabulary. EOS must stay distinct from pad: pass "
        "pad_token=<any token but EOS> or pad_id=<any id but EOS> (safe: masks come from "
        "lengths, so pad ids are never attended or scored).")

  @classmethod
  def from_folder(cls, folder: str, pad_token: str | None = None, pad_id: int | None = None,
                  chat_template: str | None = None) -> HFTokenizer:
    """Load ``folder/tokenizer.json`` and, if present, ``tokenizer_config.json``,
    ``special_tokens_map.json`` and ``chat_template.jinja``/``.json``.

    Args:
      folder: a local folder (never downloads).
      pad_token / pad_id: override the pad (must differ from EOS).
      chat_template: override the folder's chat template: a Jinja string or a file
        (:func:`read_chat_template`).
    """
    import tokenizers  # pylint: disable=import-outside-toplevel

    path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(path):
      raise TokenizerError(f"{folder}: no tokenizer.json")
    config = {**_read_json(os.path.join(folder, "special_tokens_map.json")),
              **_read_json(os.path.join(folder, "tokenizer_config.json"))}
    tokens = {key: _token_string(config.get(key))
              for key in ("bos_token", "eos_token", "pad_token", "unk_token")}
    if tokens["eos_token"] is None:
      raise TokenizerError(f"{folder}: tokenizer_config.json names no eos_token")
    return cls(tokenizers.Tokenizer.from_file(path), eos_token=tokens["eos_token"],
               pad_token=pad_token or tokens["pad_token"], pad_id=pad_id,
               bos_token=tokens["bos_token"], add_bos=config.get("add_bos_token", False),
               chat_template=(read_chat_template(chat_template)
                              or _read_chat_template(folder, config)),
               special_tokens={k: v for k, v in tokens.items() if v is not None}, name=folder)

  def encode(self, text: str) -> list[int]:
    return self.backend.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def byte_tokenizer(pad_token: str | None = None, pad_id: int | None = None,
                   chat_template: str | None = None) -> ByteTokenizer:
  """A :class:`ByteTokenizer` with the pad id and chat template of ``load_tokenizer``'s
  options (bytes have no pad token strings: ``pad_token`` is an error)."""
  if pad_token is not None:
    raise TokenizerError(f"byte-level ids have no token strings: pad_token={pad_token!r} "
                         "cannot apply; set pad_id (any id in 0..258 but EOS 257)")
  tokenizer = ByteTokenizer(chat_template=read_chat_template(chat_template))
  if pad_id is not None:
    if not 0 <= pad_id < tokenizer.vocab_size or pad_id == tokenizer.eos_id:
      raise TokenizerError(f"byte-level pad_id {pad_id} must be in 0..258 and not EOS 257")
    tokenizer = dataclasses.replace(tokenizer, pad_id=int(pad_id))
  return tokenizer


def load_tokenizer(folder: str | None = None, **kwargs) -> Tokenizer:
  """``HFTokenizer.from_folder(folder, **kwargs)``, or :func:`byte_tokenizer` if no folder."""
  if folder is None:
    return byte_tokenizer(**kwargs)
  return HFTokenizer.from_folder(folder, **kwargs)

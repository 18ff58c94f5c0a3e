"""Text form of the synthetic language: content id ``k`` is the word ``t{k}``.

``SyntheticTokenizer(64).encode("t17 t5") == [17, 5]``; pad 0, EOS 1, BOS 2 (``add_bos``:
plain-text prompts get BOS, as the synthetic prompts have). It lets synthetic data go through
the JSONL -> TFDS -> tokenise path and come back as the same ids.
"""

from __future__ import annotations

import dataclasses

from jaxalign.data.synthetic_source import BOS_ID, EOS_ID, PAD_ID

_SPECIAL_WORDS = {PAD_ID: "<pad>", EOS_ID: "<eos>", BOS_ID: "<bos>"}


@dataclasses.dataclass(frozen=True)
class SyntheticTokenizer:
  vocab_size: int = 64
  add_bos: bool = True
  chat_template: str | None = None
  pad_id: int = PAD_ID
  eos_id: int = EOS_ID
  bos_id: int | None = BOS_ID

  @property
  def special_tokens(self) -> dict[str, str]:
    return {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}

  def encode(self, text: str) -> list[int]:
    words = {word: token for token, word in _SPECIAL_WORDS.items()}
    ids = []
    for word in text.split():
      token = words.get(word)
      if token is None:
        if not (word.startswith("t") and word[1:].isdigit()):
          raise ValueError(f"not a synthetic token: {word!r}")
        token = int(word[1:])
      if not 0 <= token < self.vocab_size:
        raise ValueError(f"token {word!r} outside the vocabulary of {self.vocab_size}")
      ids.append(token)
    return ids

  def decode(self, ids) -> str:
    return " ".join(_SPECIAL_WORDS.get(int(i), f"t{int(i)}") for i in ids)


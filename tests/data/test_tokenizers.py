"""Tokenizers: a tokenizer.json folder, the byte fallback, the pad policy and chat templates."""

import json

import pytest

from jaxalign.data import (ByteTokenizer, DataError, HFTokenizer, TokenizerError,
                           default_chat, load_tokenizer, render_chat, split_chat)
from tests.data.conftest import CHATML, make_tokenizer_folder

CONVERSATION = [{"role": "system", "content": "good"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello there"},
                {"role": "user", "content": "how are you"}]


def test_folder_tokenizer_reads_specials_and_round_trips(tokenizer_folder):
  tokenizer = load_tokenizer(tokenizer_folder)
  assert isinstance(tokenizer, HFTokenizer)
  assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (1, 2, 5)
  assert tokenizer.vocab_size == 6 + 24 and not tokenizer.add_bos
  ids = tokenizer.encode("hello how are you")
  assert ids == [6, 9, 10, 11]
  assert tokenizer.decode(ids) == "hello how are you"
  assert tokenizer.encode("hi<|im_end|>") == [7, 5]  # special tokens in text are matched


def test_byte_fallback_round_trip_and_layout():
  tokenizer = load_tokenizer()
  text = "héllo, wörld ✓"
  ids = tokenizer.encode(text)
  assert ids == list(text.encode("utf-8")) and max(ids) < 256
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id, tokenizer.vocab_size) == (
      256, 257, 258, 259)
  assert tokenizer.decode(ids + [tokenizer.eos_id, tokenizer.pad_id]) == text


def test_pad_equal_to_eos_picks_a_distinct_pad_or_raises(tmp_path):
  folder = make_tokenizer_folder(tmp_path / "a", {"pad_token": "<|im_end|>"})
  with pytest.warns(UserWarning, match="'<pad>'"):
    tokenizer = load_tokenizer(folder)
  assert tokenizer.pad_id == 1 != tokenizer.eos_id
  assert load_tokenizer(folder, pad_token="<s>").pad_id == 2
  assert load_tokenizer(folder, pad_id=0).pad_id == 0

  from tokenizers import Tokenizer, models
  gpt2_like = tmp_path / "b"
  gpt2_like.mkdir()
  Tokenizer(models.WordLevel({"a": 0, "<|endoftext|>": 1}, unk_token="a")).save(
      str(gpt2_like / "tokenizer.json"))
  (gpt2_like / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
  with pytest.raises(TokenizerError, match="pad_token=.*pad_id="):
    load_tokenizer(str(gpt2_like))
  assert load_tokenizer(str(gpt2_like), pad_id=0).pad_id == 0


def test_missing_files_and_eos_raise(tmp_path):
  with pytest.raises(TokenizerError, match="no tokenizer.json"):
    load_tokenizer(str(tmp_path))
  folder = make_tokenizer_folder(tmp_path / "t", {"eos_token": None})
  with pytest.raises(TokenizerError, match="eos_token"):
    load_tokenizer(folder)


def test_default_template_is_the_documented_one():
  assert default_chat(CONVERSATION[1:3]) == "<|user|>\nhi\n<|assistant|>\nhello there\n"
  assert render_chat(CONVERSATION[1:2], ByteTokenizer(), add_generation_prompt=True) == (
      "<|user|>\nhi\n<|assistant|>\n")


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_folder_template_renders_like_transformers(tokenizer_folder, add_generation_prompt):
  transformers = pytest.importorskip("transformers")
  ours = load_tokenizer(tokenizer_folder)
  theirs = transformers.PreTrainedTokenizerFast.from_pretrained(tokenizer_folder)
  expected = theirs.apply_chat_template(CONVERSATION, tokenize=False,
                                        add_generation_prompt=add_generation_prompt)
  text = render_chat(CONVERSATION, ours, add_generation_prompt=add_generation_prompt)
  assert text == expected
  assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"]


def test_chat_template_file_and_split(tmp_path):
  folder = make_tokenizer_folder(tmp_path / "t", chat_template=None)
  (tmp_path / "t" / "chat_template.jinja").write_text(CHATML)
  tokenizer = load_tokenizer(folder)
  assert tokenizer.chat_template == CHATML
  prompt, response = split_chat(CONVERSATION[1:2], CONVERSATION[2:3], tokenizer)
  assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  assert response == "hello there<|im_end|>\n"


def test_template_that_is_not_prefix_stable_is_an_error():
  drops_generation_prompt = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}" \
                            "{% if add_generation_prompt %}>>{% endif %}"
  with pytest.raises(DataError, match="bad_chat_template"):
    split_chat(CONVERSATION[1:2], CONVERSATION[2:3], template=drops_generation_prompt)

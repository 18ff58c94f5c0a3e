"""Fixtures for the data tests: JSONL/Parquet writers and a tiny Hugging Face tokenizer folder."""

import json

import pytest

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
          "{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ("hello hi there how are you fine thanks good bad what is the answer yes no "
         "tell me a joke story user assistant system").split()
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def write_jsonl(path, rows):
  """Rows are dicts (dumped) or str/bytes lines written as they are."""
  with open(path, "wb") as handle:
    for row in rows:
      line = row if isinstance(row, bytes) else (
          row.encode("utf-8") if isinstance(row, str) else json.dumps(row).encode("utf-8"))
      handle.write(line + b"\n")
  return str(path)


def write_parquet(path, rows):
  import pyarrow as pa
  import pyarrow.parquet as pq
  keys = list(dict.fromkeys(key for row in rows for key in row))  # union, first-seen order
  pq.write_table(pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows]),
                 str(path))
  return str(path)


def make_tokenizer_folder(folder, config_overrides=None, chat_template=CHATML):
  """A WordLevel tokenizer.json (whitespace split) plus tokenizer_config.json."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
  tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer.add_special_tokens(SPECIALS)
  folder.mkdir(parents=True, exist_ok=True)
  tokenizer.save(str(folder / "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
            "eos_token": "<|im_end|>", "pad_token": "<pad>", "unk_token": "<unk>",
            "add_bos_token": False}
  if chat_template is not None:
    config["chat_template"] = chat_template
  config.update(config_overrides or {})
  (folder / "tokenizer_config.json").write_text(json.dumps(config))
  return str(folder)


@pytest.fixture
def tokenizer_folder(tmp_path):
  return make_tokenizer_folder(tmp_path / "tokenizer")

"""Model folders and data files for CLI tests: a random-weight Hugging Face folder (saved by
transformers, tests/hf_reference.py) with a word-level tokenizer.json next to it, and tiny
JSONL files in that tokenizer's words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
          "{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# ids 0, 1, 2 are the HF configs' pad, bos and eos (tests/hf_reference.py).
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = ("hello hi there how are you fine thanks good bad what is the answer yes no tell me "
         "a joke story user assistant system one two three four five six seven eight nine "
         "ten red green blue cat dog").split()


def write_tokenizer(folder, words=WORDS, chat_template=CHATML) -> str:
  """A WordLevel tokenizer.json (whitespace split, ``<unk>`` for unknown words) and its
  tokenizer_config.json in ``folder``; vocab = SPECIALS + words."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  vocab = {token: i for i, token in enumerate(SPECIALS + list(words))}
  tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
  tokenizer.add_special_tokens(SPECIALS)
  os.makedirs(folder, exist_ok=True)
  tokenizer.save(os.path.join(folder, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
            "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
            "add_bos_token": False, "model_max_length": 128}
  if chat_template:
    config["chat_template"] = chat_template
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  return str(folder)


def hf_folder(hf_model_dirs, family: str, dest, tokenizer: bool = True) -> str:
  """A copy of the session's random ``family`` checkpoint, with our tokenizer files."""
  shutil.copytree(hf_model_dirs[family], dest)
  if tokenizer:
    write_tokenizer(dest)
  return str(dest)


def write_jsonl(path, rows) -> str:
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


COMMON, NUMBERS, COLOURS = WORDS[:24], WORDS[24:34], WORDS[34:]


def _sentence(rng, n, words=COMMON):
  return " ".join(rng.choice(words, n))


def sft_rows(count: int, seed: int = 0) -> list[dict]:
  import numpy as np
  rng = np.random.default_rng(seed)
  return [{"prompt": _sentence(rng, 4), "response": _sentence(rng, 5)} for _ in range(count)]


def preference_rows(count: int, seed: int = 0) -> list[dict]:
  """Pairs where chosen responses use the colour words and rejected ones the numbers."""
  import numpy as np
  rng = np.random.default_rng(seed)
  return [{"prompt": _sentence(rng, 4), "chosen": _sentence(rng, 4, COLOURS),
           "rejected": _sentence(rng, 4, NUMBERS)} for _ in range(count)]


def jaxalign(*args, check: bool = True) -> subprocess.CompletedProcess:
  """``python -m jaxalign.cli.main ARGS`` in a subprocess (one host device, the tests'
  compilation cache)."""
  from tests.parallel.processes import ROOT, env
  result = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", *map(str, args)],
                          env=env(1), cwd=ROOT, capture_output=True, text=True)
  if check and result.returncode != 0:
    raise AssertionError(f"jaxalign {' '.join(map(str, args))} exited {result.returncode}:\n"
                         f"{result.stderr[-3000:]}")
  return result

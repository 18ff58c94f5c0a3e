"""``jaxalign sample`` on model folders written by ``jaxalign train`` (``jaxalign eval`` is in
``jaxalign.cli.eval_cmd``).

``--model`` is a jaxalign policy folder or a Hugging Face folder. The tokenizer is the
model folder's own (``jaxalign.training.tokenizers.model_tokenizer``);
``--tokenizer`` overrides it (a folder, or ``bytes``). Prompts come from ``--prompt``
(repeatable) and / or ``--prompts-file`` (JSONL / Parquet rows with a ``prompt`` field, or
plain text lines); ``--chat`` renders each prompt as a user message with the tokenizer's chat
template. Output: a JSON list on stdout, or with ``--output FILE`` one JSON object per
prompt (JSONL) there.
"""

from __future__ import annotations

import json
import os
import sys

import jax

from jaxalign import data as D
from jaxalign.eval.file_prompts import check_budget, encode_prompts, read_prompts, sample_rows
from jaxalign.models import load_model, load_pretrained
from jaxalign.models.params_io import CONFIG_FILE
from jaxalign.training.compat import folder_config, hf_folder_config
from jaxalign.training.tokenizers import BYTES, model_tokenizer


def policy_folder(model_dir: str, key: str = "--model"):
  """``(config, load_params)`` of a jaxalign policy folder or a Hugging Face folder (named
  ``key`` in errors); the config is read now, the weights when ``load_params()`` is called."""
  if os.path.exists(os.path.join(model_dir, CONFIG_FILE)):
    return (folder_config(model_dir, key, "policy"), lambda: load_model(model_dir)[1])
  return hf_folder_config(model_dir, key), lambda: load_pretrained(model_dir)[1]


def resolve_tokenizer(model_dir: str, tokenizer: str | None = None, synthetic: bool = False,
                      vocab_size: int | None = None):
  """``--tokenizer`` (a folder or ``bytes``), ``--synthetic``, else the model folder's."""
  if synthetic:
    return D.SyntheticTokenizer(vocab_size)
  if tokenizer == BYTES:
    return D.ByteTokenizer()
  if tokenizer:
    return D.HFTokenizer.from_folder(tokenizer)
  try:
    return model_tokenizer(model_dir)
  except D.TokenizerError as error:
    raise D.TokenizerError(f"--model: {error}; pass --tokenizer (a folder with "
                           "tokenizer.json, or 'bytes')") from None


def gather_prompts(prompts: list[str] | None, prompts_file: str | None) -> list:
  out = list(prompts or [])
  if prompts_file:
    out += read_prompts(prompts_file)
  if not out:
    raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
  return out


def warn_default_template(tokenizer, chat: bool, prompts: list) -> None:
  if tokenizer.chat_template is None and (chat or any(not isinstance(p, str) for p in prompts)):
    print("jaxalign: warning: the tokenizer has no chat template; using jaxalign's default "
          "(<|role|> lines, docs/data.md)", file=sys.stderr)


def run_sample(model_dir: str, prompts: list[str] | None, tokenizer_dir: str | None,
               synthetic: bool, max_new_tokens: int, temperature: float, top_k: int,
               top_p: float, seed: int, prompts_file: str | None = None, chat: bool = False,
               output: str | None = None, batch_size: int = 32) -> list[dict]:
  """One sample per prompt; returns (and with ``output`` writes as JSONL) the records
  ``{"prompt", "response", "tokens", "logprob"}``."""
  config, load_params = policy_folder(model_dir)
  texts = gather_prompts(prompts, prompts_file)
  tokenizer = resolve_tokenizer(model_dir, tokenizer_dir, synthetic, config.vocab_size)
  if tokenizer.vocab_size > config.vocab_size:
    raise D.TokenizerError(f"the tokenizer has {tokenizer.vocab_size} ids but --model "
                           f"{model_dir} has vocab_size {config.vocab_size}")
  warn_default_template(tokenizer, chat, texts)
  encoded = encode_prompts(texts, tokenizer, chat)
  check_budget(config, encoded, max_new_tokens, f"--model {model_dir}")
  params = load_params()
  samples = sample_rows(config, params, encoded, tokenizer, jax.random.PRNGKey(seed),
                        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, batch_size=batch_size)
  results = [{"prompt": prompt, **sample} for prompt, sample in zip(texts, samples)]
  if output:
    write_jsonl(output, results)
  return results


def write_jsonl(path: str, rows: list[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")

"""``jaxalign export --hf OUT --model DIR``: a jaxalign model folder as a Hugging Face one.

A policy becomes a ``*ForCausalLM`` folder (``save_pretrained``), a reward model a
``*ForSequenceClassification`` folder with ``num_labels=1`` (``save_pretrained_reward_model``).
A LoRA run's ``adapters/`` folder is merged into the base its run started from (rebuilt from
its ``run_config.yaml``: ``training/lora_folders.py``) and exported as a policy.
The model folder's tokenizer files are copied, with ``pad_token`` set to the pad jaxalign
trained with when the folder had none, used EOS or the run overrode it (so transformers pads
with the same id and a classifier finds each row's last real token) and the run's
``data.chat_template`` override written in; ``generation_config.json`` is copied, or
written from the tokenizer's ids. Byte-level and synthetic tokenizers have no Hugging Face
form: the weights are exported and the result says so.
"""

from __future__ import annotations

import json
import os
import sys

from jaxalign.models import (CheckpointError, load_model, read_model_meta, save_pretrained,
                             save_pretrained_reward_model)
from jaxalign.models.hf_config import SUPPORTED_MODEL_TYPES
from jaxalign.training.lora_folders import ADAPTERS_KIND, load_adapters_base
from jaxalign.training.tokenizers import (GENERATION_CONFIG, TOKENIZER_FILES, copy_files,
                                          model_tokenizer)


def _check_out(out_dir: str, overwrite: bool) -> None:
  if os.path.isfile(out_dir):
    raise ValueError(f"--hf {out_dir}: is a file")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise ValueError(f"--hf {out_dir}: exists and is not empty (pass --overwrite to write "
                     "into it)")


def _fix_tokenizer_config(out_dir: str, tokenizer, options: dict) -> None:
  """tokenizer_config.json as jaxalign read it: ``pad_token`` ours when the file had none,
  used EOS, or the run overrode it; the run's ``chat_template`` override."""
  path = os.path.join(out_dir, "tokenizer_config.json")
  config = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  pad = config.get("pad_token")
  pad = pad.get("content") if isinstance(pad, dict) else pad
  changed = dict(config)
  if pad is None or pad == tokenizer.special_tokens.get("eos_token") or (
      {"pad_token", "pad_id"} & set(options)):
    changed["pad_token"] = tokenizer.special_tokens["pad_token"]
  if options.get("chat_template"):
    changed["chat_template"] = options["chat_template"]
  if changed != config:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(changed, f, indent=2)


def _write_generation_config(model_dir: str, out_dir: str, config, tokenizer) -> None:
  if os.path.exists(os.path.join(model_dir, GENERATION_CONFIG)):
    copy_files(model_dir, out_dir, (GENERATION_CONFIG,))
    return
  eos = tokenizer.eos_id if tokenizer is not None else config.eos_token_id
  generation = {"bos_token_id": config.bos_token_id, "eos_token_id": eos,
                "pad_token_id": tokenizer.pad_id if tokenizer is not None else None}
  with open(os.path.join(out_dir, GENERATION_CONFIG), "w") as f:
    json.dump({k: v for k, v in generation.items() if v is not None}, f, indent=2)


def run_export(model_dir: str, out_dir: str, overwrite: bool = False) -> dict:
  """Exports ``model_dir`` to ``out_dir``; returns what was written (for the CLI's JSON)."""
  try:
    config, kind, meta = read_model_meta(model_dir)
  except CheckpointError as error:
    raise CheckpointError(f"--model: {error}") from None
  adapters = kind == ADAPTERS_KIND  # a LoRA run's adapters/: merged into their base
  if adapters:
    kind = "policy"
  if kind not in ("policy", "reward_model"):
    raise CheckpointError(f"--model {model_dir}: holds a {kind}; export takes a policy, a "
                          "reward model or LoRA adapters")
  if config.model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(f"--model {model_dir}: model_type {config.model_type!r} has no "
                          "Hugging Face export")
  _check_out(out_dir, overwrite)
  record = meta.get("tokenizer") or {}
  hf_tokenizer = record.get("kind", "hf") == "hf"
  tokenizer = model_tokenizer(model_dir) if record else None
  pad_id = tokenizer.pad_id if tokenizer is not None else config.pad_token_id
  if adapters:
    config, params = load_adapters_base(model_dir)
  else:
    _, params, _ = load_model(model_dir)
  result = {"exported": out_dir, "kind": kind}
  if adapters:
    result["merged_lora"] = {"rank": meta["config"]["lora"]["rank"],
                             "alpha": meta["config"]["lora"]["alpha"]}
  if kind == "policy":
    save_pretrained(config if pad_id is None else config.replace(pad_token_id=pad_id), params,
                    out_dir)
    result["architecture"] = "AutoModelForCausalLM"
  else:
    bias = save_pretrained_reward_model(config, params, out_dir, pad_id)
    result["architecture"] = "AutoModelForSequenceClassification (num_labels=1)"
    if bias:
      result["dropped_score_bias"] = bias
      print(f"jaxalign: warning: the score head's bias {bias:.6g} is dropped (transformers' "
            "score layer has none): exported scores are ours minus it; their differences "
            "are unchanged", file=sys.stderr)
  if hf_tokenizer and tokenizer is not None:
    copy_files(model_dir, out_dir, TOKENIZER_FILES)
    _fix_tokenizer_config(out_dir, tokenizer, record.get("options", {}))
    result["tokenizer"] = "copied"
  else:
    result["tokenizer"] = (f"none: the model uses the built-in {record['kind']} tokenizer"
                           if record else "none: the model folder records no tokenizer")
    print(f"jaxalign: warning: {out_dir}: {result['tokenizer']}; transformers will need one",
          file=sys.stderr)
  if kind == "policy":
    _write_generation_config(model_dir, out_dir, config, tokenizer)
  return result

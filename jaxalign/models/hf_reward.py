"""Reward models as Hugging Face ``*ForSequenceClassification`` folders (``num_labels=1``).

transformers' sequence classifiers (``GPT2ForSequenceClassification``,
``LlamaForSequenceClassification`` and the Mistral / Qwen2 / Qwen3 / Gemma twins) apply a
bias-free ``score = Linear(D -> 1)`` to the backbone's final hidden states [B, T, D] and read
it at the rightmost token that is not ``config.pad_token_id`` (so left and right padding both
work). Our ``RewardModel`` reads it at the last attended token: the two agree when
``pad_token_id`` is the id the batches are padded with and no real token equals it, which is
why it is written here (our pad is never EOS, and EOS is usually the last real token).

Written: the backbone under the family's prefix (``transformer.*`` / ``model.*``, no LM
head), ``score.weight`` [1, D] (our kernel [D, 1] transposed) and a config.json with the
classifier architecture, ``num_labels=1`` and ``pad_token_id``. Our head also has a bias,
which the Hugging Face layout has no place for: it shifts every score by the same constant
(Bradley-Terry training leaves it at its initial 0: only score differences get gradients),
so a non-zero bias is dropped and returned for the caller to report.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import save_file

from jaxalign.models.config import TransformerConfig
from jaxalign.models.hf_checkpoint import hf_tensors
from jaxalign.models.hf_config import CheckpointError, config_to_hf

CLASSIFIERS = {"gpt2": "GPT2ForSequenceClassification",
               "llama": "LlamaForSequenceClassification",
               "mistral": "MistralForSequenceClassification",
               "qwen2": "Qwen2ForSequenceClassification",
               "qwen3": "Qwen3ForSequenceClassification",
               "gemma2": "Gemma2ForSequenceClassification",
               "gemma3_text": "Gemma3TextForSequenceClassification"}


def reward_model_config_to_hf(config: TransformerConfig, pad_token_id: int) -> dict:
  """config.json of the classifier: the backbone's config plus the classification keys."""
  hf = config_to_hf(config)
  hf.update(architectures=[CLASSIFIERS[config.model_type]], num_labels=1,
            id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, pad_token_id=int(pad_token_id))
  return hf


def save_pretrained_reward_model(config: TransformerConfig, params: dict, path: str,
                                 pad_token_id: int | None) -> float:
  """Writes ``params`` (``{"backbone", "score"}``, a RewardModel's) as a folder that
  ``AutoModelForSequenceClassification.from_pretrained`` loads; returns the dropped bias."""
  if pad_token_id is None:
    raise CheckpointError("a reward model export needs the pad token id (transformers finds "
                          "each row's last real token by it)")
  if set(params) != {"backbone", "score"}:
    raise CheckpointError(f"not a reward model's params: top-level keys {sorted(params)}")
  tensors = hf_tensors(config, params["backbone"], skip=("lm_head.weight",))
  dense = params["score"]["dense"]
  dtype = tensors[next(iter(tensors))].dtype
  tensors["score.weight"] = np.ascontiguousarray(np.asarray(dense["kernel"]).T.astype(dtype))
  os.makedirs(path, exist_ok=True)
  save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(reward_model_config_to_hf(config, pad_token_id), f, indent=2)
  return float(np.asarray(dense["bias"], np.float32).reshape(-1)[0])

"""``jaxalign export --hf``: policies as ``*ForCausalLM`` and reward models as
``*ForSequenceClassification`` folders that transformers loads with the same outputs; and the
whole documented path HF folder + JSONL -> SFT -> RM -> DPO -> export (docs/training.md)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.cli.main import main
from jaxalign.models import Transformer, load_model, load_pretrained, save_model
from jaxalign.training.forward import reward_scores
from jaxalign.training.runs import reward_model_params
from tests import hf_reference
from tests import model_folders as mf

CLASSIFIERS = {"gpt2": "GPT2ForSequenceClassification",
               "llama": "LlamaForSequenceClassification"}


def _hf_scores(model, tokens, mask):
  """transformers' classifier scores [B]; positions from the mask (for left padding)."""
  import torch
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits[:, 0].float().numpy()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_reward_model_export_scores_like_ours(hf_model_dirs, tmp_path, family):
  import transformers as tf
  config, backbone = load_pretrained(hf_model_dirs[family])
  params = reward_model_params(config, backbone, seed=1)
  bias = 0.25  # a trained head's bias is a constant shift; the export drops it
  params["score"]["dense"]["bias"] = jnp.full((1,), bias, jnp.float32)
  model_dir = tmp_path / "rm"
  save_model(str(model_dir), config, params, kind="reward_model", tokenizer={"kind": "hf"})
  mf.write_tokenizer(model_dir)
  out = tmp_path / "hf_rm"
  result = mf.jaxalign("export", "--model", model_dir, "--hf", out)
  assert json.loads(result.stdout)["dropped_score_bias"] == pytest.approx(bias)
  assert "bias" in result.stderr

  hf = tf.AutoModelForSequenceClassification.from_pretrained(
      out, attn_implementation="eager").float().eval()
  assert type(hf).__name__ == CLASSIFIERS[family] and hf.config.num_labels == 1
  assert hf.config.pad_token_id == 0  # the tokenizer's pad: how transformers finds the end
  for side in ("left", "right"):
    tokens, mask = hf_reference.padded_batch(3, [12, 5, 9, 12], 12, side)
    ours = np.asarray(reward_scores(config, params, jnp.asarray(tokens), jnp.asarray(mask)))
    np.testing.assert_allclose(_hf_scores(hf, tokens, mask), ours - bias, atol=1e-5, rtol=0)
  # transformers' own tokenizer and right padding, as a user would call it.
  tokenizer = tf.AutoTokenizer.from_pretrained(out)
  texts = ["hello there how are you </s>", "red cat </s>"]
  batch = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="np")
  ours = np.asarray(reward_scores(config, params, jnp.asarray(batch.input_ids),
                                  jnp.asarray(batch.attention_mask)))
  theirs = _hf_scores(hf, batch.input_ids, batch.attention_mask)
  np.testing.assert_allclose(theirs, ours - bias, atol=1e-5, rtol=0)


def test_export_errors(tmp_path, hf_model_dirs, capsys):
  assert main(["export", "--model", hf_model_dirs["gpt2"], "--hf", str(tmp_path / "a")]) == 2
  assert "--model" in capsys.readouterr().err
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("x")
  config, params = load_pretrained(hf_model_dirs["gpt2"])
  save_model(str(tmp_path / "policy"), config, params, tokenizer={"kind": "bytes"})
  assert main(["export", "--model", str(tmp_path / "policy"), "--hf",
               str(tmp_path / "full")]) == 2
  assert "not empty (pass --overwrite" in capsys.readouterr().err


def test_hf_folder_and_jsonl_to_sft_rm_dpo_and_export(hf_model_dirs, tmp_path):
  """The path of docs/training.md "From a Hugging Face checkpoint to an exported model",
  command for command, on a tiny random GPT-2 and tiny JSONL files."""
  import transformers as tf
  hf = mf.hf_folder(hf_model_dirs, "gpt2", tmp_path / "gpt2")
  sft = mf.write_jsonl(tmp_path / "sft.jsonl", mf.sft_rows(32))
  prefs = mf.write_jsonl(tmp_path / "prefs.jsonl", mf.preference_rows(32))
  prefs_eval = mf.write_jsonl(tmp_path / "prefs_eval.jsonl", mf.preference_rows(16, seed=1))
  runs = tmp_path / "runs"
  common = ["--no-progress", "--set", "data.source=files", "--set", "data.max_length=64",
            "--set", "data.batch_size=8", "--set", "data.eval_batch_size=8",
            "--set", "loop.log_every=1"]
  mf.jaxalign("train", "sft", "--output-dir", runs / "sft", "--set", f"model.path={hf}",
              "--set", f"data.train_file={sft}", "--set", f"data.eval_file={sft}",
              "--set", "loop.steps=4", *common)
  mf.jaxalign("train", "rm", "--output-dir", runs / "rm",
              "--set", f"model.init_from={runs / 'sft' / 'model'}",
              "--set", f"data.train_file={prefs}", "--set", f"data.eval_file={prefs_eval}",
              "--set", "loop.steps=4", *common)
  mf.jaxalign("train", "dpo", "--output-dir", runs / "dpo",
              "--set", f"model.init_from={runs / 'sft' / 'model'}",
              "--set", f"data.train_file={prefs}", "--set", f"data.eval_file={prefs_eval}",
              "--set", "loop.steps=4", "--set", "optimizer.learning_rate=1e-3", *common)
  mf.jaxalign("export", "--model", runs / "dpo" / "model", "--hf", tmp_path / "export")
  mf.jaxalign("export", "--model", runs / "rm" / "model", "--hf", tmp_path / "export_rm")

  export = tmp_path / "export"
  for name in ("tokenizer.json", "generation_config.json"):
    assert (export / name).read_bytes() == open(os.path.join(hf, name), "rb").read()
  config, params, _ = load_model(str(runs / "dpo" / "model"))
  _, start = load_pretrained(hf)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                          jax.tree_util.tree_leaves(start)))
  assert moved > 1e-4  # DPO trained the model that is exported
  model = hf_reference.load_hf(str(export))
  tokenizer = tf.AutoTokenizer.from_pretrained(export)
  ids = tokenizer(["hello there how are you", "red green"], padding=True,
                  add_special_tokens=False, return_tensors="np")
  tokens, mask = ids.input_ids, ids.attention_mask
  ours = np.asarray(Transformer(config).apply({"params": params}, jnp.asarray(tokens),
                                              attention_mask=jnp.asarray(mask)))
  theirs = hf_reference.hf_logits(model, tokens, mask)
  np.testing.assert_allclose(ours[mask.astype(bool)], theirs[mask.astype(bool)], atol=1e-4,
                             rtol=0)
  assert tf.AutoModelForSequenceClassification.from_pretrained(
      tmp_path / "export_rm").config.pad_token_id == tokenizer.pad_token_id

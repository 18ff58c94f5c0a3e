"""``jaxalign sample`` (prompts files, chat templates, JSONL out) and ``jaxalign eval`` (the
run's own config, loss and reference; file prompts with an RM, KL and win rate), checked
against transformers on a tiny random GPT-2 with a word-level tokenizer."""

import json
import os

import numpy as np
import pytest

from jaxalign.models import load_model, load_pretrained, save_model, save_pretrained
from jaxalign.models.hf_reward import save_pretrained_reward_model
from jaxalign.training.runs import reward_model_params
from tests import hf_reference
from tests import model_folders as mf

PROMPTS = ["hello there", "what is the answer", "tell me a joke story"]


@pytest.fixture(scope="module")
def trained(hf_model_dirs, tmp_path_factory):
  """An IPO run (beta 0.5) from the HF folder, and a random reward model on its backbone."""
  root = tmp_path_factory.mktemp("eval")
  hf = mf.hf_folder(hf_model_dirs, "gpt2", root / "gpt2")
  prefs = mf.write_jsonl(root / "prefs.jsonl", mf.preference_rows(16))
  prefs_eval = mf.write_jsonl(root / "prefs_eval.jsonl", mf.preference_rows(8, seed=1))
  mf.jaxalign("train", "dpo", "--loss", "ipo", "--no-progress", "--output-dir", root / "run",
              "--set", f"model.path={hf}", "--set", "loss.beta=0.5",
              "--set", "data.source=files", "--set", f"data.train_file={prefs}",
              "--set", f"data.eval_file={prefs_eval}", "--set", "data.max_length=64",
              "--set", "data.batch_size=8", "--set", "data.eval_batch_size=8",
              "--set", "loop.steps=3", "--set", "optimizer.learning_rate=1e-3")
  config, backbone = load_pretrained(hf)
  rm = root / "rm"
  save_model(str(rm), config, reward_model_params(config, backbone, 3), kind="reward_model",
             tokenizer={"kind": "hf"})
  mf.write_tokenizer(rm)
  return {"hf": hf, "run": root / "run", "rm": str(rm), "eval_rows": prefs_eval, "root": root}


def _greedy_hf(model, ids, max_new_tokens):
  import torch
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=int),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=2,
                         pad_token_id=0)
  return out[0, len(ids):].tolist()


@pytest.mark.parametrize("chat", [True, False])
def test_sample_prompts_file_greedy_matches_transformers(trained, tmp_path, chat):
  from transformers import AutoTokenizer
  hf = trained["hf"]
  if chat:  # JSONL rows with a prompt field, each rendered as a user message
    prompts = mf.write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
  else:  # plain text, one prompt per line
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
  out = tmp_path / "samples.jsonl"
  mf.jaxalign("sample", "--model", hf, "--prompts-file", prompts, "--temperature", "0",
              "--max-new-tokens", "6", "--output", out, *(["--chat"] if chat else []))
  samples = [json.loads(line) for line in out.read_text().splitlines()]
  assert [s["prompt"] for s in samples] == PROMPTS
  tokenizer = AutoTokenizer.from_pretrained(hf)
  model = hf_reference.load_hf(hf)
  for prompt, sample in zip(PROMPTS, samples):
    if chat:
      ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                          add_generation_prompt=True, tokenize=True)
      ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    else:
      ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert sample["tokens"] == _greedy_hf(model, list(ids), 6)
    assert sample["response"] == tokenizer.decode(sample["tokens"], skip_special_tokens=True)


def _tree(folder) -> dict:
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
          for d, _, files in os.walk(folder) for f in files}


def _response_logps(model, prompt_ids, response_ids):
  import torch
  ids = torch.tensor([prompt_ids + response_ids])
  with torch.no_grad():
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
  targets = ids[0, 1:]
  picked = logps[torch.arange(len(targets)), targets]
  return float(picked[len(prompt_ids) - 1:].sum())


def test_eval_uses_the_runs_loss_and_reference_and_writes_nothing_there(trained, tmp_path):
  from transformers import AutoTokenizer
  run = trained["run"]
  before = _tree(run)
  out = tmp_path / "eval.json"
  mf.jaxalign("eval", "--model", run / "model", "--output", out)
  assert _tree(run) == before  # nothing written into the training run's folder
  result = json.loads(out.read_text())
  assert result["task"] == "dpo" and trained["hf"] in result["reference"]
  # IPO with beta 0.5 (TRL's length-normalised log-ratios) from transformers' log-probs of
  # the trained policy (exported) and of the reference (the HF folder the run started from).
  config, params, _ = load_model(str(run / "model"))
  save_pretrained(config, params, str(tmp_path / "policy"))
  policy, reference = (hf_reference.load_hf(str(tmp_path / "policy")),
                       hf_reference.load_hf(trained["hf"]))
  tokenizer = AutoTokenizer.from_pretrained(trained["hf"])
  encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids
  losses = []
  for line in open(trained["eval_rows"]):
    row = json.loads(line)
    prompt = encode(row["prompt"])
    h = 0.0
    for side, sign in (("chosen", 1), ("rejected", -1)):
      response = encode(row[side]) + [tokenizer.eos_token_id]
      ratio = (_response_logps(policy, prompt, response)
               - _response_logps(reference, prompt, response))
      h += sign * ratio / len(response)
    losses.append((h - 1.0 / (2 * 0.5)) ** 2)
  assert result["loss"] == pytest.approx(float(np.mean(losses)), abs=1e-4)


def test_eval_on_a_prompts_file_scores_samples_with_the_reward_model(trained, tmp_path):
  import torch
  import transformers as tf
  run = trained["run"]
  prompts = mf.write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
  out, samples_out = tmp_path / "eval.json", tmp_path / "samples.jsonl"
  mf.jaxalign("eval", "--model", run / "model", "--reference", run / "model",
              "--prompts-file", prompts, "--reward-model", trained["rm"],
              "--max-new-tokens", "6", "--output", out, "--samples-output", samples_out)
  result = json.loads(out.read_text())
  samples = [json.loads(line) for line in samples_out.read_text().splitlines()]
  assert result["samples/num_prompts"] == len(samples) == len(PROMPTS)
  assert abs(result["samples/kl"]) < 1e-5  # the policy against itself
  assert all(abs(s["kl"]) < 1e-5 for s in samples)
  wins = [float(s["rm_score"] > s["reference_rm_score"])
          + 0.5 * float(s["rm_score"] == s["reference_rm_score"]) for s in samples]
  assert result["samples/win_rate"] == pytest.approx(np.mean(wins))
  assert result["samples/length"] == pytest.approx(np.mean([len(s["tokens"]) for s in samples]))
  # Each sample's score from transformers' classifier on the same ids.
  config, params, _ = load_model(trained["rm"])
  bias = save_pretrained_reward_model(config, params, str(tmp_path / "hf_rm"), pad_token_id=0)
  classifier = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf_rm").eval()
  tokenizer = tf.AutoTokenizer.from_pretrained(trained["hf"])
  for prompt, sample in zip(PROMPTS, samples):
    for tokens, score in ((sample["tokens"], sample["rm_score"]),
                          (sample["reference_tokens"], sample["reference_rm_score"])):
      ids = tokenizer(prompt, add_special_tokens=False).input_ids + tokens
      with torch.no_grad():
        theirs = float(classifier(input_ids=torch.tensor([ids])).logits[0, 0])
      assert score == pytest.approx(theirs + bias, abs=1e-4)


def test_eval_errors_before_loading(trained, tmp_path, capsys):
  from jaxalign.cli.main import main
  assert main(["eval", "--model", trained["rm"], "--prompts-file", "x.jsonl"]) == 2
  assert "is a reward model" in capsys.readouterr().err
  bare = tmp_path / "bare"
  config, params = load_pretrained(trained["hf"])
  save_model(str(bare), config, params)
  assert main(["eval", "--model", str(bare)]) == 2
  err = capsys.readouterr().err
  assert "run_config.yaml" in err and "pass --config" in err

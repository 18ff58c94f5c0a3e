"""Tokenizers travel with models, and incompatible pieces are config-time errors.

Each error case used to train (to NaN, or on the wrong ids) and exit 0; now it is one line
naming both sides, before any data is built.
"""

import json
import math
import os

import jax
import numpy as np
import pytest

from jaxalign.cli.main import main
from jaxalign.models import init_params, load_pretrained, save_model, tiny_gpt2, tiny_llama
from jaxalign.training.runs import reward_model_params
from tests import model_folders as mf

FAST = ["--no-progress", "--set", "data.source=files", "--set", "data.batch_size=8",
        "--set", "data.eval_batch_size=8", "--set", "loop.steps=2", "--set", "loop.log_every=1"]


@pytest.fixture
def gpt2(hf_model_dirs, tmp_path):
  """The random HF GPT-2 (vocab 128, 128 positions) with a word-level tokenizer.json."""
  return mf.hf_folder(hf_model_dirs, "gpt2", tmp_path / "gpt2")


@pytest.fixture
def prefs(tmp_path):
  return mf.write_jsonl(tmp_path / "prefs.jsonl", mf.preference_rows(16))


def _files(path) -> list[str]:
  return ["--set", f"data.train_file={path}", "--set", f"data.eval_file={path}"]


def _error(capsys, argv) -> str:
  """Runs the CLI in-process; asserts exit 2 with one error line; returns it."""
  assert main(argv) == 2
  lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert lines and lines[-1].startswith("jaxalign: error: "), lines
  return lines[-1]


def test_training_uses_the_hf_folders_tokenizer_and_the_model_folder_carries_it(
    gpt2, tmp_path):
  rows = mf.sft_rows(16)
  train = mf.write_jsonl(tmp_path / "sft.jsonl", rows)
  out = tmp_path / "run"
  mf.jaxalign("train", "sft", "--output-dir", out, "--set", f"model.path={gpt2}",
              *_files(train),
              "--set", "data.max_length=64", *FAST)
  # transformers' own reading of the folder's tokenizer: the eval set's scored tokens are
  # each response's ids plus EOS (bytes would give ~5x as many, most rows too long).
  from transformers import AutoTokenizer
  hf_tokenizer = AutoTokenizer.from_pretrained(gpt2)
  expected = sum(len(hf_tokenizer(r["response"], add_special_tokens=False).input_ids) + 1
                 for r in rows)
  with open(out / "eval.json") as f:
    metrics = json.load(f)
  assert metrics["eval/num_tokens"] == expected
  assert math.isfinite(metrics["eval/loss"])
  model = out / "model"
  for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    assert (model / name).read_bytes() == open(os.path.join(gpt2, name), "rb").read()
  with open(model / "jaxalign_config.json") as f:
    assert json.load(f)["tokenizer"]["kind"] == "hf"


def test_file_data_without_a_tokenizer_is_an_error_naming_the_keys(tmp_path, prefs, capsys,
                                                                   hf_model_dirs):
  line = _error(capsys, ["train", "dpo", "--output-dir", str(tmp_path / "a"),
                         *_files(prefs), "--set", "data.max_length=64",
                         *FAST])
  for key in ("model.path", "model.init_from", "data.tokenizer", "bytes"):
    assert key in line
  # An HF folder without tokenizer.json: the error names model.path and the way out.
  line = _error(capsys, ["train", "dpo", "--output-dir", str(tmp_path / "b"),
                         "--set", f"model.path={hf_model_dirs['gpt2']}",
                         *_files(prefs), "--set", "data.max_length=64",
                         *FAST])
  assert "model.path" in line and "no tokenizer.json" in line and "data.tokenizer" in line
  assert not (tmp_path / "a" / "tfds").exists() and not (tmp_path / "b" / "tfds").exists()


def test_bytes_only_when_asked_and_sample_needs_no_tokenizer_flag(tmp_path, prefs):
  out = tmp_path / "run"
  mf.jaxalign("train", "dpo", "--output-dir", out, "--set", "data.tokenizer=bytes",
              *_files(prefs),
              "--set", "data.max_length=128", "--set", "model.num_layers=1", *FAST)
  with open(out / "model" / "jaxalign_config.json") as f:
    assert json.load(f)["tokenizer"] == {"kind": "bytes", "options": {}}
  samples = tmp_path / "samples.jsonl"
  mf.jaxalign("sample", "--model", out / "model", "--prompt", "hi", "--max-new-tokens", "4",
              "--output", samples)
  (sample,) = [json.loads(line) for line in samples.read_text().splitlines()]
  assert sample["prompt"] == "hi" and len(sample["tokens"]) <= 4
  assert all(0 <= t < 259 for t in sample["tokens"])


def test_mostly_unknown_tokens_warn(gpt2, tmp_path):
  rows = [{"prompt": "zork frob", "response": "quux blorp"} for _ in range(8)]
  train = mf.write_jsonl(tmp_path / "sft.jsonl", rows)
  result = mf.jaxalign("train", "sft", "--output-dir", tmp_path / "run",
                       "--set", f"model.path={gpt2}", *_files(train), "--set", "data.max_length=32",
                       "--set", "loop.steps=1", *FAST)
  assert "of the tokens are the unknown token (id 3)" in result.stderr
  assert "data.train_file=" in result.stderr


def test_tokenizer_larger_than_the_models_vocab(gpt2, tmp_path, prefs, capsys):
  line = _error(capsys, ["train", "dpo", "--output-dir", str(tmp_path / "run"),
                         "--set", f"model.path={gpt2}", "--set", "data.tokenizer=bytes",
                         *_files(prefs), "--set", "data.max_length=64",
                         *FAST])
  assert "data.tokenizer=bytes has 259 ids" in line
  assert f"model.path={gpt2}" in line and "vocab_size 128" in line
  assert not (tmp_path / "run" / "tfds").exists()


def test_max_length_beyond_the_models_positions(gpt2, tmp_path, capsys):
  long = [{"prompt": "hello " * 20, "chosen": "red " * 120, "rejected": "one " * 120}] * 8
  train = mf.write_jsonl(tmp_path / "long.jsonl", long)
  line = _error(capsys, ["train", "dpo", "--output-dir", str(tmp_path / "run"),
                         "--set", f"model.path={gpt2}", *_files(train),
                         "--set", "data.max_length=256", *FAST])
  assert "data.max_length=256" in line and "max_seq_len 128" in line
  assert f"model.path={gpt2}" in line


def _policy_folder(path, config, seed=0):
  """A jaxalign policy folder with random weights and the tests' tokenizer."""
  save_model(str(path), config, init_params(config, jax.random.PRNGKey(seed)),
             tokenizer={"kind": "hf"})
  mf.write_tokenizer(path)
  return str(path)


def _reward_folder(path, config, seed=0):
  """A jaxalign reward-model folder with random weights and the tests' tokenizer."""
  params = reward_model_params(config, init_params(config, jax.random.PRNGKey(seed)), seed)
  save_model(str(path), config, params, kind="reward_model", tokenizer={"kind": "hf"})
  mf.write_tokenizer(path)
  return str(path)


def test_reference_with_another_architecture(hf_model_dirs, tmp_path, prefs, capsys):
  # Same tensor shapes as the policy (so the old layout check passed) but another RoPE base:
  # the reference would silently be computed with the policy's config.
  config, _ = load_pretrained(hf_model_dirs["llama"])
  llama = mf.hf_folder(hf_model_dirs, "llama", tmp_path / "llama")
  other = _policy_folder(tmp_path / "ref", config.replace(rope_theta=5000.0))
  line = _error(capsys, ["train", "dpo", "--output-dir", str(tmp_path / "run"),
                         "--set", f"model.path={llama}", "--set", f"model.reference_from={other}",
                         *_files(prefs), "--set", "data.max_length=64",
                         *FAST])
  assert f"model.reference_from={other}" in line and f"model.path={llama}" in line
  assert "rope_theta 100.0 vs 5000.0" in line
  assert not (tmp_path / "run" / "tfds").exists()  # before any data is built


def test_reward_model_with_another_vocab_or_architecture(gpt2, tmp_path, capsys):
  prompts = mf.write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hello there"}] * 8)
  online = ["--set", f"model.path={gpt2}", *_files(prompts),
            "--set", "data.max_length=64", "--set", "ppo.rollout_batch_size=16",
            "--set", "online.max_new_tokens=8", "--set", "ppo.max_new_tokens=8", *FAST]
  small_vocab = _reward_folder(tmp_path / "rm64", tiny_gpt2(vocab_size=64))
  line = _error(capsys, ["train", "ppo", "--output-dir", str(tmp_path / "a"),
                         "--set", f"online.reward_model={small_vocab}", *online])
  assert f"online.reward_model={small_vocab}" in line and "vocab_size 64" in line
  assert f"model.path={gpt2}" in line and "vocab_size 128" in line
  llama = _reward_folder(tmp_path / "rm_llama", tiny_llama(vocab_size=128))
  line = _error(capsys, ["train", "online-dpo", "--output-dir", str(tmp_path / "b"),
                         "--set", f"online.reward_model={llama}",
                         "--set", "online.prompts_per_refresh=16", *online])
  assert "a llama" in line and "a gpt2" in line and f"online.reward_model={llama}" in line


def test_reward_model_with_fewer_positions_than_the_rollouts(gpt2, tmp_path, capsys):
  prompts = mf.write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hello there"}] * 8)
  short = _reward_folder(tmp_path / "rm", tiny_gpt2(vocab_size=128, max_seq_len=32))
  line = _error(capsys, ["train", "ppo", "--output-dir", str(tmp_path / "run"),
                         "--set", f"model.path={gpt2}", "--set", f"online.reward_model={short}",
                         *_files(prompts), "--set", "data.max_length=64",
                         "--set", "ppo.rollout_batch_size=16", "--set", "ppo.max_new_tokens=16",
                         *FAST])
  assert f"online.reward_model={short}" in line and "max_seq_len 32" in line
  assert "64 tokens" in line


def test_reward_model_with_another_tokenizer(gpt2, tmp_path, capsys):
  """Same vocabulary size and architecture, but its ids mean other words."""
  prompts = mf.write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hello there"}] * 8)
  rm = _reward_folder(tmp_path / "rm", tiny_gpt2(vocab_size=128))
  mf.write_tokenizer(rm, words=list(reversed(mf.WORDS)))
  line = _error(capsys, ["train", "ppo", "--output-dir", str(tmp_path / "run"),
                         "--set", f"model.path={gpt2}", "--set", f"online.reward_model={rm}",
                         *_files(prompts), "--set", "data.max_length=64",
                         "--set", "ppo.rollout_batch_size=16", "--set", "ppo.max_new_tokens=8",
                         *FAST])
  assert "another tokenizer" in line and f"model.path={gpt2}" in line


def test_unknown_fraction_counts_unk_ids(tmp_path):
  from jaxalign import data as D
  from jaxalign.training.tokenizers import unknown_fraction
  tokenizer = D.HFTokenizer.from_folder(mf.write_tokenizer(tmp_path / "tok"))
  rows = D.SFTRows([np.array([3, 3, 7])], [np.array([3, 2])], np.zeros(1, bool), 0, 8, ["x"])
  assert unknown_fraction(rows, tokenizer) == (3 / 5, 3)
  assert unknown_fraction(rows, D.ByteTokenizer()) == (0.0, None)

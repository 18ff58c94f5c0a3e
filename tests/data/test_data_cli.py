"""`jaxalign train` on small files: the data cache follows the files' content and read options,
and each data knob reaches the run (pad, chat template, prompt budget and overflow policy,
SFT on chosen, the RM margin, unpaired KTO, files mixed by weight)."""

import json
import math
import os

import numpy as np
import pytest

from tests import model_folders as mf

FAST = ["--no-progress", "--set", "data.source=files", "--set", "loop.steps=1",
        "--set", "data.batch_size=2", "--set", "data.eval_batch_size=2",
        "--set", "model.num_layers=1", "--set", "loop.checkpoint_every=0"]


def _sets(**keys) -> list[str]:
  out = []
  for key, value in keys.items():
    out += ["--set", f"data.{key}={value}"]
  return out


def _train(task, out, *args, check=True):
  return mf.jaxalign("train", task, "--output-dir", out, *FAST, *args, check=check)


def _report(out) -> dict:
  with open(os.path.join(out, "data_report.json")) as f:
    return json.load(f)


def _eval(out) -> dict:
  with open(os.path.join(out, "eval.json")) as f:
    return json.load(f)


def _error_line(result) -> str:
  assert result.returncode == 2, result.stderr[-2000:]
  return [line for line in result.stderr.splitlines() if line.strip()][-1]


@pytest.fixture
def words(tmp_path):
  return mf.write_tokenizer(tmp_path / "tokenizer")


def test_an_edited_file_is_read_again_on_the_next_run(tmp_path, words):
  train = mf.write_jsonl(tmp_path / "prefs.jsonl", mf.preference_rows(4))
  out = tmp_path / "run"
  files = _sets(train_file=train, eval_file=train, tokenizer=words, max_length=32)
  _train("dpo", out, *files)
  assert _report(out)["train"]["num_kept"] == 4
  mf.write_jsonl(train, mf.preference_rows(6, seed=1))  # edited in place
  second = _train("dpo", out, *files, "--overwrite")  # the run's tfds/ cache is kept
  assert _report(out)["train"]["num_kept"] == 6 and "train 6 rows" in second.stdout
  assert "changed (sha256" in second.stderr  # why the copy was rebuilt


def test_a_cache_built_with_skip_never_lets_raise_pass(tmp_path, words):
  bad = '{"prompt": "hi", "chosen": 3, "rejected": "no"}'
  rows = [json.dumps(r) for r in mf.preference_rows(4)] + [bad]
  train = tmp_path / "prefs.jsonl"
  train.write_text("\n".join(rows) + "\n")
  shared = _sets(train_file=train, eval_file=train, tokenizer=words, max_length=32,
                 cache_dir=tmp_path / "cache")
  _train("dpo", tmp_path / "lenient", *shared, *_sets(on_error="skip"))
  assert _report(tmp_path / "lenient")["train"]["skipped"] == {"wrong_type": 1}
  strict = _train("dpo", tmp_path / "strict", *shared, check=False)  # same cache_dir
  assert f"{train}:5: wrong_type" in _error_line(strict)


def _no_pad_tokenizer(folder) -> str:
  """GPT-2 style: pad == EOS and none of PAD_CANDIDATES in the vocabulary; no template."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {t: i for i, t in enumerate(["<s>", "</s>", "<sep>"] + mf.WORDS)}
  tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<sep>"))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer.add_special_tokens(["<s>", "</s>", "<sep>"])
  os.makedirs(folder)
  tokenizer.save(os.path.join(folder, "tokenizer.json"))
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<sep>"}, f)
  return str(folder)


def test_pad_token_pad_id_and_chat_template_knobs(tmp_path):
  tokenizer = _no_pad_tokenizer(tmp_path / "tok")
  hi = [{"role": "user", "content": "hi there"}]
  rows = [{"messages": hi + [{"role": "assistant", "content": "hello there"}]}] * 3
  data = mf.write_jsonl(tmp_path / "chat.jsonl", rows)
  files = _sets(train_file=data, eval_file=data, tokenizer=tokenizer, max_length=32)
  missing = _train("sft", tmp_path / "a", *files, check=False)
  assert "pad_token=" in _error_line(missing) and "pad_id=" in _error_line(missing)
  # The fallback template renders "<|assistant|>\nhello there\n": 2 words + EOS per row.
  fallback = _train("sft", tmp_path / "b", *files, *_sets(pad_id=2))
  assert "built-in fallback template" in fallback.stderr
  assert _eval(tmp_path / "b")["eval/num_tokens"] == 3 * 3
  template = tmp_path / "chat.jinja"
  template.write_text("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} tell "
                      "{% endfor %}{% if add_generation_prompt %}assistant {% endif %}")
  own = _train("sft", tmp_path / "c", *files, *_sets(pad_token="<sep>", chat_template=template))
  assert "fallback" not in own.stderr
  # "assistant hello there tell " after the prompt: 3 words + EOS per row.
  assert _eval(tmp_path / "c")["eval/num_tokens"] == 3 * 4


def test_prompt_budget_overflow_policy_and_sft_on_chosen(tmp_path, words):
  """max_length 12 (prompt floor 6): a pair that fits, a long prompt, a long prompt with an
  8-token chosen response, a 13-token chosen response; task=sft trains on chosen."""
  long_prompt = " ".join(["hi"] * 20)
  rows = [{"prompt": "hi", "chosen": "red cat", "rejected": "one"},
          {"prompt": long_prompt, "chosen": "red cat", "rejected": "one"},
          {"prompt": long_prompt, "chosen": " ".join(["red"] * 7), "rejected": "one"},
          {"prompt": "hi hi hi", "chosen": " ".join(["blue"] * 12), "rejected": "one"}]
  data = mf.write_jsonl(tmp_path / "prefs.jsonl", rows)
  files = _sets(train_file=data, eval_file=data, tokenizer=words, max_length=12)

  def run(name, **knobs):
    _train("sft", tmp_path / name, *files, *_sets(**knobs))
    report = _report(tmp_path / name)["eval"]
    return report, _eval(tmp_path / name)["eval/num_tokens"]

  report, tokens = run("skip")
  assert report["skipped"] == {"too_long": 2} and report["flagged"] == {"prompt_truncated": 1}
  assert tokens == 3 + 3  # the chosen responses (+ EOS) of rows 1 and 2
  report, tokens = run("prompt", on_overflow="truncate_prompt")
  assert report["skipped"] == {"too_long": 1} and report["flagged"] == {"prompt_truncated": 2}
  assert tokens == 3 + 3 + 8
  report, tokens = run("response", on_overflow="truncate_response", max_prompt_length=3)
  # Prompts may now shrink to 3 tokens: row 3 fits whole, only row 4's response is cut.
  assert report["num_kept"] == 4 and report["skipped"] == {}
  assert report["flagged"] == {"prompt_truncated": 2, "response_truncated": 1}
  assert tokens == 3 + 3 + 8 + (12 - 3)


def test_reward_model_margin_from_the_files_scores(tmp_path, words):
  rows = [dict(r, score_chosen=float(2 + i), score_rejected=1.0)
          for i, r in enumerate(mf.preference_rows(5))]
  data = mf.write_jsonl(tmp_path / "prefs.jsonl", rows)
  out = tmp_path / "rm"
  _train("rm", out, *_sets(train_file=data, eval_file=data, tokenizer=words, max_length=32,
                           margin_scale=0.5))
  # Recompute the eval loss over all 5 rows (eval batches of 2) from the saved model:
  # -log sigmoid(r_chosen - r_rejected - 0.5 (score_chosen - score_rejected)).
  from jaxalign.data import load_tokenizer, parse_record, right_pad, tokenize_preferences
  from jaxalign.models import RewardModel, load_model
  config, params, kind = load_model(str(out / "model"))
  assert kind == "reward_model"
  pairs, _ = tokenize_preferences([parse_record(r, "preference") for r in rows],
                                  load_tokenizer(words), 32)
  scores = {}
  for side in ("chosen", "rejected"):
    tokens, mask, _ = right_pad(pairs.prompts, getattr(pairs, side), 32, pairs.pad_id)
    scores[side] = np.asarray(RewardModel(config).apply({"params": params}, tokens, mask))
  margin = 0.5 * np.array([r["score_chosen"] - r["score_rejected"] for r in rows])
  logits = scores["chosen"] - scores["rejected"] - margin
  expected = float(np.mean(np.log1p(np.exp(-logits))))
  assert math.isclose(_eval(out)["eval/loss"], expected, rel_tol=1e-4)


def test_unpaired_kto_files_mixed_by_weight(tmp_path, words):
  def unpaired(count, seed):
    pairs = mf.preference_rows(count, seed)
    return [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs for side in ("chosen", "rejected")]
  first = mf.write_jsonl(tmp_path / "a.jsonl", unpaired(2, 0))
  second = mf.write_jsonl(tmp_path / "b.jsonl", unpaired(6, 1))
  mixture = f"[{{path: {first}, weight: 3}}, {{path: {second}, weight: 1}}]"
  out = tmp_path / "kto"
  result = _train("dpo", out, "--loss", "kto",
                  *_sets(train_file=mixture, eval_file=second, tokenizer=words, max_length=32))
  assert "a.jsonl: 4 rows, weight 3 (75% of samples)" in result.stdout
  assert "b.jsonl: 12 rows, weight 1 (25% of samples)" in result.stdout
  assert _report(out)["train"]["num_kept"] == 16
  metrics = _eval(out)
  assert {"eval/kl", "eval/rewards/chosen", "eval/rewards/rejected"} <= set(metrics)
  assert all(math.isfinite(v) for v in metrics.values())
  wrong = _train("sft", tmp_path / "sft", *_sets(train_file=first, eval_file=first,
                                                tokenizer=words, max_length=32), check=False)
  assert "unpaired rows" in _error_line(wrong) and "--loss kto" in _error_line(wrong)

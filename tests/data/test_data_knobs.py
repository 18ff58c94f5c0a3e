"""The data knobs below the CLI: pad candidates and overrides, chat templates from strings or
files (and the fallback warning), on_overflow policies, SFT on a preference row's chosen,
unpaired (KTO) rows, and files mixed by weight (proportions, determinism, resume)."""

import json
import warnings

import numpy as np
import pytest

from jaxalign.data import (BatchIterator, ByteTokenizer, DataError, MixedRows, PAD_CANDIDATES,
                           SFTRows, TokenizerError, build_dataset, load_tokenizer, parse_record,
                           read_chat_template, read_records, tokenize_preferences,
                           tokenize_prompts, tokenize_sft, tokenize_unpaired)
from jaxalign.data import report as reasons
from jaxalign.data.chat import FALLBACK_WARNING
from jaxalign.data.mixture import slot_counts
from tests.data.conftest import CHATML, write_jsonl

BYTES = ByteTokenizer()
EOS = BYTES.eos_id


def test_llama3_pad_token_is_a_candidate_before_unk(tmp_path):
  from tokenizers import Tokenizer, models
  folder = tmp_path / "llama3"
  folder.mkdir()
  vocab = {"<unk>": 0, "<|begin_of_text|>": 1, "<|eot_id|>": 2,
           "<|finetune_right_pad_id|>": 3, "hi": 4}
  Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}))  # no pad, as Llama-3
  assert "<|finetune_right_pad_id|>" in PAD_CANDIDATES
  with pytest.warns(UserWarning, match="finetune_right_pad_id"):
    assert load_tokenizer(str(folder)).pad_id == 3  # not <unk> (0)
  assert load_tokenizer(str(folder), pad_token="hi").pad_id == 4
  with pytest.raises(TokenizerError, match="outside the vocabulary"):
    load_tokenizer(str(folder), pad_id=99)


def test_byte_tokenizer_takes_a_pad_id_and_template_but_no_pad_token():
  assert load_tokenizer(None, pad_id=0).pad_id == 0
  assert load_tokenizer(None, chat_template="{{ messages[0]['content'] }}").chat_template
  with pytest.raises(TokenizerError, match="pad_id"):
    load_tokenizer(None, pad_token="<pad>")
  with pytest.raises(TokenizerError, match="not EOS"):
    load_tokenizer(None, pad_id=EOS)


def test_chat_template_from_a_string_or_a_file(tmp_path, tokenizer_folder):
  jinja = tmp_path / "t.jinja"
  jinja.write_text(CHATML)
  as_json = tmp_path / "t.json"
  as_json.write_text(json.dumps({"chat_template": CHATML}))
  assert read_chat_template(str(jinja)) == read_chat_template(str(as_json)) == CHATML
  assert read_chat_template(CHATML) == CHATML
  with pytest.raises(TokenizerError, match="neither a file nor a Jinja template"):
    read_chat_template(str(tmp_path / "missing.jinja"))
  override = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
  tokenizer = load_tokenizer(tokenizer_folder, chat_template=override)
  assert tokenizer.chat_template == override  # the data's template wins over the folder's


def test_the_fallback_template_warns_and_a_real_one_does_not(tokenizer_folder):
  record = parse_record({"prompt": [{"role": "user", "content": "hi"}],
                         "response": [{"role": "assistant", "content": "hello"}]}, "sft")
  with pytest.warns(UserWarning, match="built-in fallback template"):
    tokenize_sft([record], BYTES, max_length=64)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    rows, _ = tokenize_sft([record], load_tokenizer(tokenizer_folder), max_length=64)
  assert len(rows) == 1 and "fallback" in FALLBACK_WARNING


def _long_rows():
  """max_length 12 (default prompt floor 6): fits; long prompt; long prompt + 8-token
  response; a 13-token response."""
  return [parse_record(row, "sft", f"f:{i}") for i, row in enumerate([
      {"prompt": "ab", "response": "cd"},
      {"prompt": "p" * 20, "response": "cd"},
      {"prompt": "p" * 20, "response": "r" * 7},
      {"prompt": "p" * 3, "response": "r" * 12}], start=1)]


@pytest.mark.parametrize("policy, kept, skipped, prompt_cut, response_cut", [
    ("skip", [1, 2], {"too_long": 2}, 1, 0),
    ("truncate_prompt", [1, 2, 3], {"too_long": 1}, 2, 0),
    ("truncate_response", [1, 2, 3, 4], {}, 2, 2),
    ("truncate", [1, 2, 3, 4], {}, 2, 2),  # the older name of truncate_response
])
def test_on_overflow_policies(policy, kept, skipped, prompt_cut, response_cut):
  rows, report = tokenize_sft(_long_rows(), BYTES, max_length=12, on_overflow=policy,
                              on_error="skip")
  assert [int(s.split(":")[1]) for s in rows.sources] == kept
  assert dict(report.skipped) == skipped
  assert report.flagged.get(reasons.PROMPT_TRUNCATED, 0) == prompt_cut
  assert report.flagged.get(reasons.RESPONSE_TRUNCATED, 0) == response_cut
  assert all(len(p) + len(r) <= 12 for p, r in zip(rows.prompts, rows.responses))
  if policy == "truncate_prompt":  # responses whole (EOS kept), the prompt below the floor
    assert rows.responses[2].tolist() == [ord("r")] * 7 + [EOS] and len(rows.prompts[2]) == 4


def test_max_prompt_length_sets_how_far_a_prompt_may_be_cut():
  rows, report = tokenize_sft(_long_rows(), BYTES, max_length=12, max_prompt_length=3,
                              on_error="skip")
  assert len(rows) == 3 and dict(report.skipped) == {"too_long": 1}  # row 3 now fits
  assert [len(p) for p in rows.prompts] == [2, 9, 4]  # cut only as far as needed
  with pytest.raises(ValueError, match="max_prompt_length"):
    tokenize_sft(_long_rows(), BYTES, max_length=12, max_prompt_length=12)
  prompts, _ = tokenize_prompts([parse_record({"prompt": "p" * 9}, "prompt")], BYTES, 4,
                                on_overflow="truncate_prompt")
  assert prompts.prompts[0].tolist() == [ord("p")] * 4


def test_sft_on_a_preference_row_trains_on_chosen():
  text = parse_record({"prompt": "q", "chosen": "yes", "rejected": "no"}, "sft")
  assert (text["prompt"], text["response"]) == ("q", "yes")
  hh = parse_record({"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                     "rejected": "\n\nHuman: hi\n\nAssistant: go"}, "sft")
  assert (hh["prompt"], hh["response"]) == ("\n\nHuman: hi\n\nAssistant:", " hello")
  user, reply = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}
  chat = parse_record({"chosen": [user, reply], "rejected": [user, dict(reply, content="no")]},
                      "sft")
  assert (chat["prompt"], chat["response"]) == ([user], [reply])
  alone = parse_record({"chosen": [user, reply]}, "sft")  # no rejected: a conversation
  assert (alone["prompt"], alone["response"]) == ([user], [reply])
  plain = parse_record({"prompt": "q", "response": "r", "chosen": "ignored"}, "sft")
  assert plain["response"] == "r"


def test_unpaired_rows_parse_tokenize_and_batch(tmp_path):
  path = write_jsonl(tmp_path / "kto.jsonl", [
      {"prompt": "ab", "completion": "good", "label": True},
      {"prompt": "ab", "completion": "bad", "label": False, "weight": 0.5},
      {"prompt": "ab", "completion": "x", "label": "yes"},
      {"prompt": "ab", "completion": "x"}])
  records, report = read_records(path, "unpaired", on_error="skip")
  assert [r["label"] for r in records] == [True, False]
  assert dict(report.skipped) == {reasons.WRONG_TYPE: 1, reasons.MISSING_FIELD: 1}
  with pytest.raises(DataError, match=r"kto.jsonl:3: wrong_type: field 'label'"):
    read_records(path, "unpaired")
  builder, _ = build_dataset("kto", "unpaired", {"train": path}, str(tmp_path / "tfds"),
                             on_error="skip")
  from jaxalign.data import RecordSource
  stored = RecordSource(builder.as_data_source("train"), "unpaired")
  assert [stored[i]["label"] for i in range(2)] == [True, False]
  rows, _ = tokenize_unpaired(stored, BYTES, max_length=16)
  batch = rows.batch([0, 1], 8)
  assert batch.desirable.tolist() == [True, False] and batch.weights.tolist() == [1.0, 0.5]
  np.testing.assert_array_equal(batch.loss_mask[1], [0, 0, 1, 1, 1, 1, 0, 0])  # bad + EOS
  np.testing.assert_array_equal(batch.tokens[1, :6], [97, 98, 98, 97, 100, EOS])


def _parts(sizes):
  """SFT rows whose prompt id says the part (10 * part) and the row within it."""
  return [SFTRows.from_token_lists([[10 * p + 100 + i] for i in range(n)], [[3, 1]] * n,
                                   pad_id=0, eos_id=1, max_length=8) for p, n in
          enumerate(sizes)]


def test_slot_counts_are_exact_largest_remainder_proportions():
  assert slot_counts([10, 30], [1, 1]).tolist() == [20, 20]
  assert slot_counts([40, 20], [3, 1]).tolist() == [45, 15]
  assert slot_counts([5, 5, 5], [1, 1, 1]).tolist() == [5, 5, 5]
  with pytest.raises(ValueError, match="> 0"):
    slot_counts([5, 5], [1, 0])


def test_mixture_follows_the_weights_and_resumes_exactly():
  mixed = MixedRows(_parts([8, 40]), weights=[3, 1], names=["small", "large"])
  assert len(mixed) == 48 and mixed.pad_id == 0 and "75% of samples" in mixed.describe()
  iterator = BatchIterator(mixed, 8, seed=3)
  draws = [next(iterator).tokens[:, 0] for _ in range(6 * 4)]  # 4 epochs
  ids = np.concatenate(draws)
  small = ids < 110
  assert small.sum() == 4 * 36 and (~small).sum() == 4 * 12  # exactly 3:1 per epoch
  # The small part is upsampled in whole passes: each of its rows 18 times in 4 epochs.
  assert np.unique(ids[small], return_counts=True)[1].tolist() == [18] * 8
  # The large part continues where the last epoch stopped: 48 draws = 40 rows + 8 repeats.
  assert len(np.unique(ids[~small])) == 40
  again = BatchIterator(MixedRows(_parts([8, 40]), weights=[3, 1]), 8, seed=3)
  for _ in range(9):
    next(again)
  state = again.get_state()
  resumed = BatchIterator(MixedRows(_parts([8, 40]), weights=[3, 1]), 8, seed=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(np.concatenate([next(resumed).tokens[:, 0] for _ in range(15)]),
                                np.concatenate(draws[9:]))
  other_seed = BatchIterator(MixedRows(_parts([8, 40]), weights=[3, 1]), 8, seed=4)
  assert not np.array_equal(next(other_seed).tokens[:, 0], draws[0])


def test_preference_rows_of_a_mixture_keep_their_scores():
  pairs = [parse_record({"prompt": "a", "chosen": "b", "rejected": "c", "score": s},
                        "preference") for s in (1.0, 2.0)]
  first, _ = tokenize_preferences(pairs[:1], BYTES, 16)
  second, _ = tokenize_preferences(pairs[1:], BYTES, 16)
  mixed = MixedRows([first, second], [1, 1])
  assert mixed.batch([0, 1], 8).scores.tolist() == [1.0, 2.0]

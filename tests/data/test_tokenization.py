"""Tokenisation into masks that follow CONVENTIONS.md, and the truncation / EOS / pad policy."""

import dataclasses

import numpy as np
import pytest

from jaxalign.data import (ByteTokenizer, DataError, PreferenceRows, SFTRows, load_tokenizer,
                           parse_record, tokenize_preferences, tokenize_prompts, tokenize_sft)
from jaxalign.data import report as reasons

BYTES = ByteTokenizer()
EOS = BYTES.eos_id


def _pair(prompt, chosen, rejected, source="f:1"):
  return parse_record({"prompt": prompt, "chosen": chosen, "rejected": rejected},
                      "preference", source)


def test_pair_masks_mark_response_and_eos_only():
  rows, report = tokenize_preferences([_pair("ab", "xyz", "q")], BYTES, max_length=16)
  batch = rows.batch([0], 8)
  assert report.num_kept == 1
  np.testing.assert_array_equal(batch.chosen_tokens[0], [97, 98, 120, 121, 122, EOS, 256, 256])
  np.testing.assert_array_equal(batch.chosen_attention_mask[0], [1, 1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(batch.chosen_loss_mask[0], [0, 0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(batch.rejected_tokens[0], [97, 98, 113, EOS, 256, 256, 256, 256])
  np.testing.assert_array_equal(batch.rejected_loss_mask[0], [0, 0, 1, 1, 0, 0, 0, 0])
  assert batch.weights.tolist() == [1.0] and batch.scores.tolist() == [0.0]
  assert not batch.chosen_truncated[0] and not batch.rejected_truncated[0]


def test_masks_come_from_lengths_even_when_pad_is_a_real_token():
  # "a" (97) as the pad id: rows that contain "a" keep it attended and scored.
  tokenizer = dataclasses.replace(BYTES, pad_id=97)
  rows, _ = tokenize_sft([parse_record({"prompt": "a", "response": "aa"}, "sft")], tokenizer,
                         max_length=8)
  batch = rows.batch([0], 6)
  np.testing.assert_array_equal(batch.tokens[0], [97, 97, 97, EOS, 97, 97])
  np.testing.assert_array_equal(batch.attention_mask[0], [1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(batch.loss_mask[0], [0, 1, 1, 1, 0, 0])


def test_pad_equal_to_eos_is_refused():
  with pytest.raises(ValueError, match="pad_id == eos_id"):
    tokenize_sft([], dataclasses.replace(BYTES, pad_id=EOS), max_length=8)
  with pytest.raises(ValueError, match="pad_id == eos_id"):
    SFTRows.from_token_lists([[3]], [[4, 1]], pad_id=1, eos_id=1)


def test_bos_is_prepended_when_the_tokenizer_asks():
  tokenizer = dataclasses.replace(BYTES, add_bos=True)
  rows, _ = tokenize_prompts([parse_record({"prompt": "hi"}, "prompt")], tokenizer, 8)
  batch = rows.batch([0], 4)
  np.testing.assert_array_equal(batch.tokens[0], [256, 258, 104, 105])  # left-padded
  np.testing.assert_array_equal(batch.attention_mask[0], [0, 1, 1, 1])


def test_chat_pair_uses_the_template_and_keeps_one_eos(tokenizer_folder):
  tokenizer = load_tokenizer(tokenizer_folder)
  user = {"role": "user", "content": "hi"}
  record = parse_record({"prompt": [user], "chosen": [{"role": "assistant", "content": "fine"}],
                         "rejected": [{"role": "assistant", "content": "bad"}]}, "preference")
  rows, _ = tokenize_preferences([record], tokenizer, max_length=32)
  ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
  np.testing.assert_array_equal(rows.prompts[0], ids)
  np.testing.assert_array_equal(rows.chosen[0], tokenizer.encode("fine<|im_end|>"))
  assert rows.chosen[0][-1] == tokenizer.eos_id and list(rows.chosen[0]).count(5) == 1


def test_prompt_is_cut_from_the_left_only_when_needed_and_flagged():
  long_prompt = "0123456789"
  rows, report = tokenize_preferences([_pair(long_prompt, "ab", "c"), _pair("xy", "ab", "c")],
                                      BYTES, max_length=8, max_prompt_length=4)
  # 8 - len("ab" + EOS) = 5 prompt tokens fit: more than max_prompt_length, so 5 are kept.
  assert BYTES.decode(rows.prompts[0]) == "56789"
  assert BYTES.decode(rows.prompts[1]) == "xy"
  assert dict(report.flagged) == {reasons.PROMPT_TRUNCATED: 1}
  assert report.locations[reasons.PROMPT_TRUNCATED] == ["f:1"]
  assert rows.chosen[0][-1] == EOS and not rows.chosen_truncated[0]


def test_prompt_cut_keeps_bos():
  tokenizer = dataclasses.replace(BYTES, add_bos=True)
  rows, _ = tokenize_sft([parse_record({"prompt": "0123456789", "response": "ab"}, "sft")],
                         tokenizer, max_length=8, max_prompt_length=4)
  assert rows.prompts[0].tolist() == [258] + BYTES.encode("6789")


def test_row_longer_than_budget_skip_raise_or_truncate():
  too_long = _pair("0123456789", "abcdefgh", "x", source="f:9")
  rows, report = tokenize_preferences([too_long, _pair("p", "a", "b")], BYTES, max_length=8)
  assert len(rows) == 1 and dict(report.skipped) == {reasons.TOO_LONG: 1}
  assert report.locations[reasons.TOO_LONG] == ["f:9"]
  with pytest.raises(DataError, match="f:9: too_long"):
    tokenize_preferences([too_long], BYTES, max_length=8, on_overflow="raise")
  rows, report = tokenize_preferences([too_long], BYTES, max_length=8, on_overflow="truncate")
  # The prompt keeps max_prompt_length = 4 tokens; each response gets the remaining 4.
  assert BYTES.decode(rows.prompts[0]) == "6789"
  assert BYTES.decode(rows.chosen[0]) == "abcd" and EOS not in rows.chosen[0]
  assert rows.chosen_truncated.tolist() == [True]
  assert rows.rejected[0].tolist() == [ord("x"), EOS] and rows.rejected_truncated.tolist() == [
      False]
  assert dict(report.flagged) == {reasons.PROMPT_TRUNCATED: 1, reasons.RESPONSE_TRUNCATED: 1}
  assert rows.batch([0], 8).chosen_truncated.tolist() == [True]


def test_pair_identical_after_truncation_is_skipped_and_counted():
  rows, report = tokenize_preferences([_pair("p", "abcdefgh1", "abcdefgh2")], BYTES,
                                      max_length=6, on_overflow="truncate", on_error="skip")
  assert len(rows) == 0 and dict(report.skipped) == {reasons.IDENTICAL_RESPONSES: 1}


def test_prompt_budget_for_prompt_datasets():
  records = [parse_record({"prompt": "0123456789"}, "prompt", "f:1")]
  rows, report = tokenize_prompts(records, BYTES, max_prompt_length=4)
  assert BYTES.decode(rows.prompts[0]) == "6789" and rows.truncated.tolist() == [True]
  assert dict(report.flagged) == {reasons.PROMPT_TRUNCATED: 1}
  rows, report = tokenize_prompts(records, BYTES, 4, on_overflow="skip")
  assert len(rows) == 0 and dict(report.skipped) == {reasons.TOO_LONG: 1}


def test_weights_and_scores_reach_the_batch():
  records = [parse_record({"prompt": "p", "chosen": "a", "rejected": "b", "weight": 0.25,
                           "score": 3.0}, "preference")]
  batch = tokenize_preferences(records, BYTES, 8)[0].batch([0], 8)
  assert batch.weights.tolist() == [0.25] and batch.scores.tolist() == [3.0]


def test_token_list_rows_flag_responses_without_eos():
  rows = PreferenceRows.from_token_lists([[5, 6]], [[7, 1]], [[8, 9]], pad_id=0, eos_id=1)
  assert rows.chosen_truncated.tolist() == [False] and rows.rejected_truncated.tolist() == [True]
  assert rows.max_length == 4

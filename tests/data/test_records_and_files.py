"""Row validation and file reading: the formats accepted, and every bad-input case, raised
or counted."""

import math

import numpy as np
import pytest

from jaxalign.data import DataError, read_records
from jaxalign.data import report as reasons
from jaxalign.data.records import parse_record
from tests.data.conftest import write_jsonl, write_parquet

GOOD = {"prompt": "what is the answer", "chosen": "yes", "rejected": "no"}


def test_text_pair_with_weight_and_scores():
  record = parse_record({**GOOD, "weight": 2, "score_chosen": 5.0, "score_rejected": 3.5},
                        "preference", "f:1")
  assert record == {"prompt": "what is the answer", "chosen": "yes", "rejected": "no",
                    "weight": 2.0, "score": 1.5, "source": "f:1"}
  assert math.isnan(parse_record(GOOD, "preference")["score"])


def test_chat_pair_ultrafeedback_style_splits_the_shared_prompt_turn():
  user = {"role": "user", "content": "tell me a joke"}
  row = {"prompt": "tell me a joke",
         "chosen": [user, {"role": "assistant", "content": "good joke"}],
         "rejected": [user, {"role": "assistant", "content": "bad joke"}]}
  record = parse_record(row, "preference")
  assert record["prompt"] == [user]
  assert record["chosen"] == [{"role": "assistant", "content": "good joke"}]
  assert record["rejected"] == [{"role": "assistant", "content": "bad joke"}]


def test_chat_pair_implicit_and_explicit_prompt():
  user = {"role": "user", "content": "hi"}
  implicit = parse_record({"chosen": [user, {"role": "assistant", "content": "a"}],
                           "rejected": [user, {"role": "assistant", "content": "b"}]},
                          "preference")
  explicit = parse_record({"prompt": [user], "chosen": [{"role": "assistant", "content": "a"}],
                           "rejected": [{"role": "assistant", "content": "b"}]}, "preference")
  assert implicit == explicit


def test_hh_rlhf_text_pair_splits_at_the_last_assistant_turn():
  shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: tell me a joke\n\nAssistant:"
  record = parse_record({"chosen": shared + " a good one", "rejected": shared + " no"},
                        "preference")
  assert record["prompt"] == shared
  assert (record["chosen"], record["rejected"]) == (" a good one", " no")


def test_sft_forms():
  assert parse_record({"prompt": "p", "completion": "c"}, "sft")["response"] == "c"
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
  record = parse_record({"messages": messages}, "sft")
  assert record["prompt"] == messages[:1] and record["response"] == messages[1:]
  assert parse_record({"messages": messages[:1]}, "prompt")["prompt"] == messages[:1]


def test_bytes_and_numpy_values_are_normalised_to_str():
  record = parse_record({"prompt": b"caf\xc3\xa9", "chosen": np.bytes_(b"yes"),
                         "rejected": np.str_("no"), "weight": np.float32(0.5)}, "preference")
  assert (record["prompt"], record["chosen"], record["rejected"]) == ("café", "yes", "no")
  assert record["weight"] == 0.5 and isinstance(record["weight"], float)


@pytest.mark.parametrize("row, kind, reason", [
    ({"prompt": "p", "chosen": "a"}, "preference", reasons.MISSING_FIELD),
    ({"prompt": "p"}, "sft", reasons.MISSING_FIELD),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "preference", reasons.WRONG_TYPE),
    ({"prompt": "p", "chosen": "a", "rejected": ["b"]}, "preference", reasons.WRONG_TYPE),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "weight": "1"}, "preference",
     reasons.WRONG_TYPE),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "weight": -1}, "preference",
     reasons.BAD_VALUE),
    ([1, 2], "prompt", reasons.WRONG_TYPE),
    ({"prompt": "  ", "chosen": "a", "rejected": "b"}, "preference", reasons.EMPTY_PROMPT),
    ({"prompt": "p", "chosen": "", "rejected": "b"}, "preference", reasons.EMPTY_RESPONSE),
    ({"prompt": "p", "response": "\n"}, "sft", reasons.EMPTY_RESPONSE),
    ({"prompt": ""}, "prompt", reasons.EMPTY_PROMPT),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "preference",
     reasons.IDENTICAL_RESPONSES),
    ({"prompt": b"\xff\xfe", "response": "r"}, "sft", reasons.INVALID_UTF8),
])
def test_bad_rows_raise_with_their_reason(row, kind, reason):
  with pytest.raises(DataError) as caught:
    parse_record(row, kind, "f:1")
  assert caught.value.reason == reason


def _bad_file(tmp_path):
  return write_jsonl(tmp_path / "bad.jsonl", [
      GOOD,                                             # 1 ok
      '{"prompt": "p", "chosen": "a", "rejected": ',    # 2 malformed json
      {"prompt": "p", "chosen": "a"},                   # 3 missing field
      {"prompt": ["x"], "chosen": "a", "rejected": "b"},  # 4 wrong type
      {"prompt": "", "chosen": "a", "rejected": "b"},   # 5 empty prompt
      {"prompt": "p", "chosen": "a", "rejected": " "},  # 6 empty response
      {"prompt": "p", "chosen": "a", "rejected": "a"},  # 7 identical
      b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}',  # 8 invalid utf-8
      "",                                               # 9 blank line: ignored
      {**GOOD, "chosen": "fine"},                       # 10 ok
  ])


def test_raise_policy_names_file_and_line(tmp_path):
  path = _bad_file(tmp_path)
  with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed_json") as caught:
    read_records(path, "preference", on_error="raise")
  assert caught.value.location == f"{path}:2"


def test_skip_policy_counts_every_reason_with_locations(tmp_path):
  path = _bad_file(tmp_path)
  records, report = read_records(path, "preference", on_error="skip")
  assert [r["source"] for r in records] == [f"{path}:1", f"{path}:10"]
  assert dict(report.skipped) == {reasons.MALFORMED_JSON: 1, reasons.MISSING_FIELD: 1,
                                  reasons.WRONG_TYPE: 1, reasons.EMPTY_PROMPT: 1,
                                  reasons.EMPTY_RESPONSE: 1, reasons.IDENTICAL_RESPONSES: 1,
                                  reasons.INVALID_UTF8: 1}
  assert report.num_rows == 9 and report.num_kept == 2 and report.num_skipped == 7
  assert report.locations[reasons.INVALID_UTF8] == [f"{path}:8"]
  assert "malformed_json=1" in report.summary()


def test_parquet_rows_located_by_row_number(tmp_path):
  path = write_parquet(tmp_path / "p.parquet", [
      GOOD, {"prompt": "p", "chosen": "a", "rejected": "a"}])
  records, report = read_records(path, "preference", on_error="skip")
  assert len(records) == 1 and records[0]["source"] == f"{path}:1"
  assert report.locations[reasons.IDENTICAL_RESPONSES] == [f"{path}:2"]


def test_unknown_policy_and_missing_file_raise(tmp_path):
  with pytest.raises(ValueError, match="on_error"):
    read_records(_bad_file(tmp_path), "preference", on_error="ignore")
  with pytest.raises(FileNotFoundError):
    read_records(str(tmp_path / "nope.jsonl"), "preference")

"""The TFDS builder over local JSONL / Parquet files, read back with as_data_source, and the
catalog path through tfds.testing.mock_data. No TensorFlow anywhere."""

import math
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxalign.data import (DataError, RecordSource, build_dataset, catalog_source,
                           load_local_dataset)
from jaxalign.data import report as reasons
from tests.data.conftest import write_jsonl, write_parquet

USER = {"role": "user", "content": "tell me a joke"}
PAIRS = [{"prompt": "what is the answer", "chosen": "yes", "rejected": "no", "weight": 0.5},
         {"prompt": "how are you", "chosen": "fine", "rejected": "bad", "score": 2.0},
         {"prompt": "hi", "chosen": "hello there", "rejected": "what"}]
CHAT_PAIRS = [{"chosen": [USER, {"role": "assistant", "content": "good joke"}],
               "rejected": [USER, {"role": "assistant", "content": "bad joke"}]},
              {"prompt": "hi", "chosen": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}],
               "rejected": [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "what"}]}]
PROMPTS = [{"prompt": "tell me a story"}, {"prompt": [USER]}]
SFT = [{"prompt": "hi", "response": "hello"}, {"prompt": "how are you", "completion": "fine"}]


def _records(builder, split, kind):
  return [RecordSource(builder.as_data_source(split), kind)[i]
          for i in range(len(builder.as_data_source(split)))]


def _strip_sources(records):
  return [{k: v for k, v in r.items() if k != "source"} for r in records]


@pytest.mark.parametrize("writer", [write_jsonl, write_parquet], ids=["jsonl", "parquet"])
def test_preference_round_trip(tmp_path, writer):
  suffix = "jsonl" if writer is write_jsonl else "parquet"
  train = writer(tmp_path / f"train.{suffix}", PAIRS)
  test = writer(tmp_path / f"test.{suffix}", PAIRS[:1])
  builder, reports = build_dataset("pairs", "preference", {"train": train, "test": [test]},
                                   str(tmp_path / "tfds"))
  records = _records(builder, "train", "preference")
  assert [r["source"] for r in records] == [f"{train}:{i}" for i in (1, 2, 3)]
  assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records] == [
      (p["prompt"], p["chosen"], p["rejected"]) for p in PAIRS]
  assert records[0]["weight"] == 0.5 and records[1]["score"] == 2.0
  assert math.isnan(records[2]["score"]) and records[2]["weight"] == 1.0
  assert len(builder.as_data_source("test")) == 1
  assert reports["train"].num_kept == 3 and reports["test"].num_kept == 1
  assert builder.info.metadata["source_files"] == {"train": [train], "test": [test]}
  assert train in builder.info.description and builder.info.file_format.value == "array_record"
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("writer", [write_jsonl, write_parquet], ids=["jsonl", "parquet"])
def test_chat_pairs_prompts_and_sft_round_trip(tmp_path, writer):
  suffix = "jsonl" if writer is write_jsonl else "parquet"
  data_dir = str(tmp_path / "tfds")
  expected = {}
  for kind, rows in (("preference", CHAT_PAIRS), ("prompt", PROMPTS), ("sft", SFT)):
    if writer is write_parquet and kind == "prompt":
      rows = PROMPTS[1:]  # a Parquet column has one type: messages only
    from jaxalign.data import read_records
    path = writer(tmp_path / f"{kind}.{suffix}", rows)
    expected[kind] = _strip_sources(read_records(path, kind)[0])
    builder, _ = build_dataset(f"{kind}_set", kind, {"train": path}, data_dir)
    assert _strip_sources(_records(builder, "train", kind)) == expected[kind]
  assert expected["preference"][0]["prompt"] == [USER]
  assert expected["preference"][1]["chosen"] == [{"role": "assistant", "content": "hello"}]


def test_reload_without_the_files_and_through_tfds_data_source(tmp_path):
  path = write_jsonl(tmp_path / "train.jsonl", PAIRS)
  data_dir = str(tmp_path / "tfds")
  build_dataset("pairs", "preference", {"train": path}, data_dir)
  (tmp_path / "train.jsonl").unlink()
  reloaded = load_local_dataset("pairs", data_dir, "train")
  assert len(reloaded) == 3 and reloaded[1]["chosen"] == "fine"
  raw = tfds.data_source("jaxalign_local_files/pairs", split="train", data_dir=data_dir)
  assert isinstance(raw[0]["prompt"], bytes)  # TFDS gives bytes; RecordSource gives str
  assert RecordSource(raw, "preference")[0]["prompt"] == "what is the answer"
  _, reports = build_dataset("pairs", "preference", {"train": path}, data_dir)  # reused
  assert reports["train"].num_kept == 3
  other = write_jsonl(tmp_path / "other.jsonl", PAIRS[:2])
  builder, _ = build_dataset("pairs", "preference", {"train": other}, data_dir)  # rebuilt
  assert len(builder.as_data_source("train")) == 2  # never silently the old data
  with pytest.raises(FileNotFoundError, match="train.jsonl"):  # no copy of it any more
    build_dataset("pairs", "preference", {"train": path}, data_dir)


def test_skipped_rows_are_counted_in_the_stored_report(tmp_path):
  path = write_jsonl(tmp_path / "train.jsonl", PAIRS + ["{oops", {"prompt": "p"}])
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(DataError, match="train.jsonl:4"):
    build_dataset("strict", "preference", {"train": path}, data_dir)
  builder, reports = build_dataset("lenient", "preference", {"train": path}, data_dir,
                                   on_error="skip")
  assert len(builder.as_data_source("train")) == 3
  assert dict(reports["train"].skipped) == {reasons.MALFORMED_JSON: 1,
                                            reasons.MISSING_FIELD: 1}
  stored = tfds.builder_from_directory(
      str(tmp_path / "tfds/jaxalign_local_files/lenient/1.0.0")).info.metadata
  assert stored["reports"]["train"]["skipped"] == {"malformed_json": 1, "missing_field": 1}


def test_catalog_dataset_through_mock_data_with_field_mapping():
  with tfds.testing.mock_data(num_examples=4):
    prompts = catalog_source("imdb_reviews", "train", "prompt", fields={"prompt": "text"})
    records = [prompts[i] for i in range(len(prompts))]
  assert len(records) == 4
  assert all(isinstance(r["prompt"], str) and r["prompt"].strip() for r in records)
  assert records[0]["source"] == "imdb_reviews/train[0]"


def test_catalog_examples_as_bytes_or_str_and_bad_examples_are_located():
  examples = [{"question": b"caf\xc3\xa9", "good": "yes", "bad": b"no"},
              {"question": "hi", "good": np.bytes_(b"a"), "bad": "a"}]

  def as_data_source(self, split, **kwargs):
    del self, split, kwargs
    return examples

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    pairs = catalog_source("imdb_reviews", "train", "preference",
                           fields={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (pairs[0]["prompt"], pairs[0]["chosen"], pairs[0]["rejected"]) == (
        "café", "yes", "no")
    with pytest.raises(DataError, match=r"imdb_reviews/train\[1\]: identical_responses"):
      pairs[1]


def test_a_split_with_no_valid_rows_is_a_clear_error(tmp_path):
  path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": " "}])
  with pytest.raises(ValueError, match="no valid rows.*empty_prompt=1"):
    build_dataset("empty", "prompt", {"train": path}, str(tmp_path / "tfds"), on_error="skip")


def test_build_and_read_never_import_tensorflow(tmp_path):
  """In a fresh interpreter: build, read back, tokenise, batch; TensorFlow stays unimported."""
  import subprocess
  import textwrap
  path = write_jsonl(tmp_path / "train.jsonl", PAIRS)
  script = textwrap.dedent(f"""
      import sys
      from jaxalign.data import (BatchIterator, ByteTokenizer, RecordSource, build_dataset,
                                 tokenize_preferences)
      builder, _ = build_dataset("pairs", "preference", {{"train": {path!r}}},
                                 {str(tmp_path / "tfds")!r})
      records = RecordSource(builder.as_data_source("train"), "preference")
      rows, _ = tokenize_preferences(records, ByteTokenizer(), 64)
      next(BatchIterator(rows, 2, seed=0))
      assert "tensorflow" not in sys.modules, "tensorflow was imported"
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith("ok")

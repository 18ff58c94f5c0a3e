"""The TFDS copy of a file is keyed by its content and read options, never by its path only."""

import logging
import os

import pytest

from jaxalign.data import DataError, RecordSource, build_dataset, dataset_fingerprint
from tests.data.conftest import write_jsonl

PAIRS = [{"prompt": "hi", "chosen": "hello", "rejected": "what"},
         {"prompt": "how are you", "chosen": "fine", "rejected": "bad"}]


def _rows(builder):
  source = RecordSource(builder.as_data_source("train"), "preference")
  return [source[i]["chosen"] for i in range(len(source))]


def _rebuilt(caplog) -> bool:
  return any("rebuilding" in record.getMessage() for record in caplog.records)


def test_an_edit_that_keeps_size_and_mtime_is_still_seen(tmp_path, caplog):
  path = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
  data_dir = str(tmp_path / "tfds")
  builder, _ = build_dataset("prefs", "preference", {"train": path}, data_dir)
  assert _rows(builder) == ["hello", "fine"]
  stat = os.stat(path)
  edited = [dict(PAIRS[0], chosen="hallo"), PAIRS[1]]  # same byte length
  write_jsonl(path, edited)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert os.path.getsize(path) == stat.st_size
  with caplog.at_level(logging.WARNING, logger="jaxalign.data"):
    builder, reports = build_dataset("prefs", "preference", {"train": path}, data_dir)
  assert _rows(builder) == ["hallo", "fine"] and reports["train"].num_kept == 2
  assert _rebuilt(caplog) and "prefs.jsonl changed" in caplog.text


def test_a_touched_but_unchanged_file_is_reused(tmp_path, caplog):
  path = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
  data_dir = str(tmp_path / "tfds")
  build_dataset("prefs", "preference", {"train": path}, data_dir)
  os.utime(path, (1, 1))
  with caplog.at_level(logging.WARNING, logger="jaxalign.data"):
    builder, reports = build_dataset("prefs", "preference", {"train": path}, data_dir)
  assert not _rebuilt(caplog) and reports["train"].num_kept == 2
  stored = builder.info.metadata["fingerprint"]["splits"]["train"][0]
  assert stored["size"] == os.path.getsize(path) and len(stored["sha256"]) == 64


def test_a_skip_cache_never_lets_a_raise_run_pass(tmp_path):
  path = write_jsonl(tmp_path / "prefs.jsonl", PAIRS + ["{oops"])
  data_dir = str(tmp_path / "tfds")
  _, reports = build_dataset("prefs", "preference", {"train": path}, data_dir, on_error="skip")
  assert dict(reports["train"].skipped) == {"malformed_json": 1}
  with pytest.raises(DataError, match="prefs.jsonl:3: malformed_json"):
    build_dataset("prefs", "preference", {"train": path}, data_dir, on_error="raise")


def test_every_read_option_is_in_the_key(tmp_path):
  path = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
  base = dataset_fingerprint("preference", {"train": [path]}, "raise")
  assert base != dataset_fingerprint("sft", {"train": [path]}, "raise")
  assert base != dataset_fingerprint("preference", {"train": [path]}, "skip")
  assert base["format"] >= 2 and base["splits"]["train"][0]["path"] == path
  data_dir = str(tmp_path / "tfds")
  build_dataset("prefs", "preference", {"train": path}, data_dir)
  builder, _ = build_dataset("prefs", "sft", {"train": path}, data_dir)  # rebuilt as SFT
  source = RecordSource(builder.as_data_source("train"), "sft")
  assert source[0]["response"] == "hello"  # SFT on a preference file's chosen


def test_a_missing_file_reuses_its_stored_copy_with_a_warning(tmp_path, caplog):
  path = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
  data_dir = str(tmp_path / "tfds")
  build_dataset("prefs", "preference", {"train": path}, data_dir)
  os.remove(path)
  with caplog.at_level(logging.WARNING, logger="jaxalign.data"):
    builder, _ = build_dataset("prefs", "preference", {"train": path}, data_dir)
  assert _rows(builder) == ["hello", "fine"] and "source file is missing" in caplog.text
  with pytest.raises(FileNotFoundError):  # another kind was never built from it
    build_dataset("prefs", "sft", {"train": path}, data_dir)

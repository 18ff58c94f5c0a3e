"""Read JSONL and Parquet files into validated records, with ``file:line`` for every row.

JSONL (``.jsonl``, ``.json``, ``.jsonl.gz``): one JSON object per line, blank lines ignored;
lines are decoded as strict UTF-8, so invalid bytes are reported at their line. Parquet
(``.parquet``): one row per record, located as ``file:row`` (1-based). Paths go through
``etils.epath``, so ``gs://`` works where the matching filesystem is installed.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from typing import Any

from etils import epath

from jaxalign.data import report as reasons
from jaxalign.data.records import parse_record
from jaxalign.data.report import DataError, DataReport, check_policy, handle

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def file_format(path: str) -> str:
  """``"jsonl"`` or ``"parquet"`` from the file name."""
  name = str(path).lower()
  if name.endswith(JSONL_SUFFIXES):
    return "jsonl"
  if name.endswith(PARQUET_SUFFIXES):
    return "parquet"
  raise ValueError(f"{path}: unknown file type (expected one of "
                   f"{JSONL_SUFFIXES + PARQUET_SUFFIXES})")


def _jsonl_rows(path: str) -> Iterator[tuple[str, Any]]:
  """Yield ``(location, row)``; a row that cannot be read is yielded as a located DataError."""
  with epath.Path(path).open("rb") as handle_:
    stream = gzip.GzipFile(fileobj=handle_) if str(path).endswith(".gz") else handle_
    for line_number, raw in enumerate(stream, start=1):
      location = f"{path}:{line_number}"
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as error:
        yield location, DataError(reasons.INVALID_UTF8, str(error), location)
        continue
      if not text.strip():
        continue
      try:
        yield location, json.loads(text)
      except json.JSONDecodeError as error:
        yield location, DataError(reasons.MALFORMED_JSON, f"{error.msg} at column "
                                  f"{error.colno}", location)


def _parquet_rows(path: str) -> Iterator[tuple[str, Any]]:
  import pyarrow.parquet as parquet  # pylint: disable=import-outside-toplevel

  with epath.Path(path).open("rb") as handle_:
    table = parquet.read_table(handle_)
  for row_number, row in enumerate(table.to_pylist(), start=1):
    yield f"{path}:{row_number}", row


def iter_rows(path: str) -> Iterator[tuple[str, Any]]:
  """Raw rows of one file as ``(location, row_or_DataError)``."""
  if file_format(path) == "parquet":
    return _parquet_rows(path)
  return _jsonl_rows(path)


def _first_keys(path: str) -> set[str]:
  """The field names of a file's first row (Parquet: its columns); empty if none is read."""
  if file_format(path) == "parquet":
    import pyarrow.parquet as parquet  # pylint: disable=import-outside-toplevel
    with epath.Path(path).open("rb") as handle_:
      return set(parquet.ParquetFile(handle_).schema_arrow.names)
  for _, row in _jsonl_rows(path):
    if isinstance(row, dict):
      return set(row)
  return set()


def detect_kind(path: str, default: str) -> str:
  """``"unpaired"`` when the file's first row has a ``label`` and no ``rejected`` (TRL's
  unpaired form, for KTO), else ``default``."""
  keys = _first_keys(str(path))
  return "unpaired" if "label" in keys and "rejected" not in keys else default


def iter_records(paths: Sequence[str], kind: str, on_error: str,
                 report: DataReport) -> Iterator[dict]:
  """Validated records of ``kind`` from ``paths`` in order; bad rows raise or are counted."""
  check_policy(on_error)
  for path in paths:
    if not epath.Path(path).exists():
      raise FileNotFoundError(f"{path}: no such file")
    for location, row in iter_rows(str(path)):
      try:
        if isinstance(row, DataError):
          raise row
        record = parse_record(row, kind, location)
      except DataError as error:
        handle(error if error.location else error.at(location), on_error, report)
        continue
      report.keep()
      yield record


def read_records(paths: str | Sequence[str], kind: str,
                 on_error: str = "raise") -> tuple[list[dict], DataReport]:
  """All records of ``kind`` in ``paths`` (JSONL or Parquet) and the report of what was skipped.

  Args:
    paths: one path or several; rows keep file order.
    kind: ``"preference"``, ``"prompt"`` or ``"sft"``.
    on_error: ``"raise"`` (first bad row raises a ``DataError`` naming ``file:line``) or
      ``"skip"`` (bad rows are counted in the report, by reason, with example locations).
  """
  paths = [paths] if isinstance(paths, (str, epath.PathLike)) else list(paths)
  report = DataReport()
  records = list(iter_records([str(p) for p in paths], kind, on_error, report))
  return records, report

"""Random-access record sources over TFDS data sources (local builds and catalog datasets).

:class:`RecordSource` wraps anything with ``__len__`` and ``__getitem__`` that returns TFDS
examples (``builder.as_data_source()[split]``, ``tfds.data_source(...)``, a list of dicts) and
returns validated records (:mod:`jaxalign.data.records`): bytes or str values, numpy scalars
and TFDS's dict-of-lists sequences all come out as plain ``str`` / ``float`` / message lists.
A bad example raises a ``DataError`` located as ``name[index]`` (or the stored ``file:line``);
the tokenisers apply the skip/raise policy, so nothing is dropped uncounted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxalign.data.records import parse_record, to_messages, to_text
from jaxalign.data.report import DataError
from jaxalign.data.tfds_builder import BUILDER_NAME, TEXT_FIELDS, VERSION


def _is_local_schema(example: Mapping, kind: str) -> bool:
  return all(f"{field}_messages" in example for field in TEXT_FIELDS[kind])


def example_to_record(example: Mapping, kind: str) -> dict:
  """A stored example of :func:`features_for` schema -> a record (no revalidation needed)."""
  chat = len(to_messages(example[f"{TEXT_FIELDS[kind][-1]}_messages"], "messages")) > 0
  record = {"source": to_text(example["source"], "source")}
  for field in TEXT_FIELDS[kind]:
    record[field] = (to_messages(example[f"{field}_messages"], f"{field}_messages") if chat
                     else to_text(example[field], field))
  if kind == "preference":
    record["weight"] = float(example["weight"])
    score = float(example["score"])
    record["score"] = score if math.isfinite(score) else math.nan
  if kind == "unpaired":
    record["weight"] = float(example["weight"])
    record["label"] = bool(int(example["label"]))
  return record


def _plain(value: Any) -> Any:
  """numpy scalars / arrays / bytes-in-arrays -> Python values (records.py does the rest)."""
  if isinstance(value, np.ndarray):
    return value.item() if value.ndim == 0 else [_plain(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, Mapping):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(item) for item in value]
  return value


class RecordSource(Sequence):
  """Validated records of ``kind`` over a TFDS-style random-access source.

  Args:
    source: ``len`` + ``__getitem__`` returning example dicts.
    kind: ``"preference"``, ``"prompt"`` or ``"sft"``.
    fields: our field name -> the source's field name, for catalog datasets whose columns are
      named differently, e.g. ``{"prompt": "text"}``. Unmapped fields keep their names.
    name: used in error locations (``name[index]``).
  """

  def __init__(self, source: Any, kind: str, fields: Mapping[str, str] | None = None,
               name: str = "source"):
    self.source, self.kind, self.name = source, kind, name
    self.fields = dict(fields or {})

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(index)
    location = f"{self.name}[{index}]"
    try:
      example = self.source[index]
      if not self.fields and _is_local_schema(example, self.kind):
        return example_to_record(example, self.kind)
      row = {ours: example[theirs] for ours, theirs in self.fields.items() if theirs in example}
      row.update({key: value for key, value in example.items()
                  if key not in self.fields.values() and key not in row})
      return parse_record(_plain(row), self.kind, location)
    except DataError as error:
      raise error if error.location else error.at(location) from None


def load_local_dataset(name: str, data_dir: str, split: str, kind: str | None = None,
                       version: str = VERSION) -> RecordSource:
  """Records of one split of a dataset built by :func:`build_dataset` (files not needed).

  The kind is read from the dataset's metadata unless given.
  """
  path = os.path.join(data_dir, BUILDER_NAME, name, version)
  builder = tfds.builder_from_directory(path)
  kind = kind or builder.info.metadata["kind"]
  return RecordSource(builder.as_data_source(split=split), kind, name=f"{name}/{split}")


def catalog_source(name: str, split: str, kind: str, fields: Mapping[str, str] | None = None,
                   data_dir: str | None = None) -> RecordSource:
  """Records from a TFDS catalog dataset already prepared on this machine (never downloads).

  Args:
    name: a TFDS name such as ``"imdb_reviews"`` or ``"my_dataset/config:1.0.0"``.
    split: e.g. ``"train"`` or ``"train[:10%]"``.
    kind: which record kind to validate into.
    fields: our field -> the dataset's field, e.g. ``{"prompt": "text"}``.
    data_dir: TFDS data dir (default: TFDS's default, ``~/tensorflow_datasets``).
  """
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  return RecordSource(source, kind, fields=fields, name=f"{name}/{split}")


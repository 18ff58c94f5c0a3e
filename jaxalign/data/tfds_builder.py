"""A TFDS builder that turns local JSONL / Parquet files into an array_record dataset.

``build_dataset(name, kind, {"train": [...], "test": [...]}, data_dir)`` validates every row
(:mod:`jaxalign.data.records`), writes ``data_dir/jaxalign_local_files/<name>/1.0.0/`` in the
``array_record`` format, and returns the builder and a :class:`DataReport`. Read it back with
``builder.as_data_source()`` (random access, no TensorFlow needed) or, later, with
:func:`jaxalign.data.sources.load_local_dataset`. The dataset's info records the kind, the
source files per split and the report (``info.metadata``, and the description).

Stored features (text and chat forms share one schema; the chat form leaves the text fields
empty, the text form leaves the message lists empty):

- preference: ``prompt, chosen, rejected`` (Text), ``prompt_messages, chosen_messages,
  rejected_messages`` (Sequence of ``{role, content}``), ``weight, score`` (float32, score NaN
  when absent), ``source`` (``file:line``).
- prompt: ``prompt, prompt_messages, source``.
- sft: ``prompt, response, prompt_messages, response_messages, source``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxalign.data.files import iter_records
from jaxalign.data.records import KINDS, is_chat_record
from jaxalign.data.report import DataReport, check_policy

BUILDER_NAME = "jaxalign_local_files"
VERSION = "1.0.0"
TEXT_FIELDS = {"preference": ("prompt", "chosen", "rejected"), "prompt": ("prompt",),
               "sft": ("prompt", "response")}


@dataclasses.dataclass
class LocalFilesConfig(tfds.core.BuilderConfig):
  """Which files make which split.

  Attributes:
    kind: ``"preference"``, ``"prompt"`` or ``"sft"``.
    split_files: split name -> paths (JSONL or Parquet; ``gs://`` paths work where the
      filesystem is installed).
    on_error: ``"raise"`` or ``"skip"`` for bad rows (see :mod:`jaxalign.data.report`).
  """

  kind: str = "preference"
  split_files: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  on_error: str = "raise"


def _messages_feature() -> tfds.features.Sequence:
  return tfds.features.Sequence({"role": tfds.features.Text(),
                                 "content": tfds.features.Text()})


def features_for(kind: str) -> tfds.features.FeaturesDict:
  """The TFDS feature schema of one kind."""
  features = {"source": tfds.features.Text()}
  for field in TEXT_FIELDS[kind]:
    features[field] = tfds.features.Text()
    features[f"{field}_messages"] = _messages_feature()
  if kind == "preference":
    features["weight"] = tfds.features.Scalar(np.float32)
    features["score"] = tfds.features.Scalar(np.float32)
  return tfds.features.FeaturesDict(features)


def record_to_example(record: dict, kind: str) -> dict:
  """A validated record -> one TFDS example of the kind's schema."""
  chat = is_chat_record(record)
  example = {"source": record["source"]}
  for field in TEXT_FIELDS[kind]:
    example[field] = "" if chat else record[field]
    messages = record[field] if chat else []
    example[f"{field}_messages"] = {"role": [m["role"] for m in messages],
                                    "content": [m["content"] for m in messages]}
  if kind == "preference":
    example["weight"] = np.float32(record["weight"])
    example["score"] = np.float32(record["score"])
  return example


class JaxalignLocalFiles(tfds.core.GeneratorBasedBuilder):
  """Local preference / prompt / SFT files as a TFDS dataset; one config per user dataset."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIG_CLS = LocalFilesConfig

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    sources = {split: [str(p) for p in paths] for split, paths in config.split_files.items()}
    self.reports: dict[str, DataReport] = {}
    self._metadata = tfds.core.MetadataDict(kind=config.kind, source_files=sources,
                                            on_error=config.on_error, reports={})
    description = (f"jaxalign {config.kind} dataset {config.name!r} built from local files: "
                   + "; ".join(f"{split}: {', '.join(paths)}" for split, paths in sources.items()))
    return tfds.core.DatasetInfo(builder=self, description=description,
                                 features=features_for(config.kind), metadata=self._metadata,
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, paths)
            for split, paths in self.builder_config.split_files.items()}

  def _generate_examples(self, split, paths):
    config = self.builder_config
    report = self.reports[split] = DataReport()
    for index, record in enumerate(iter_records(paths, config.kind, config.on_error, report)):
      yield index, record_to_example(record, config.kind)
    if not report.num_kept:
      raise ValueError(f"split {split!r} has no valid rows in {list(paths)}: "
                       f"{report.summary()}")
    self._metadata["reports"][split] = report.to_dict()


def build_dataset(name: str, kind: str, split_files: Mapping[str, str | Sequence[str]],
                  data_dir: str, on_error: str = "raise",
                  overwrite: bool = False) -> tuple[JaxalignLocalFiles, dict[str, DataReport]]:
  """Build (or reuse) the array_record dataset ``name`` from local files.

  Args:
    name: the dataset's name (the builder config name; a folder under ``data_dir``).
    kind: ``"preference"``, ``"prompt"`` or ``"sft"``.
    split_files: split -> path or paths, e.g. ``{"train": "train.jsonl", "test": [...]}``.
    data_dir: where TFDS writes the dataset (a local folder or ``gs://bucket/path``).
    on_error: ``"raise"`` or ``"skip"`` bad rows (counted in the returned reports).
    overwrite: rebuild even if the dataset already exists. Without it, an existing dataset
      of this name is reused if it was built from the same kind and files, and is an error
      otherwise (so changed files never silently yield the old data).

  Returns:
    ``(builder, reports)``: read with ``builder.as_data_source()``; ``reports`` maps split to
    the :class:`DataReport` of this build (restored from the stored metadata on reuse).
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  check_policy(on_error)
  split_files = {split: [paths] if isinstance(paths, str) else [str(p) for p in paths]
                 for split, paths in split_files.items()}
  config = LocalFilesConfig(name=name, kind=kind, split_files=split_files, on_error=on_error,
                            description=f"{kind} dataset from local files")
  builder = JaxalignLocalFiles(config=config, data_dir=data_dir, file_format="array_record")
  stored = dict(builder.info.metadata)  # the existing dataset's, if there is one
  requested = {"kind": kind, "source_files": split_files}
  if not overwrite and builder.data_path.exists() and any(
      stored.get(key) != value for key, value in requested.items()):
    raise ValueError(f"{builder.data_path} was built from {stored.get('kind')} files "
                     f"{stored.get('source_files')}, not {kind} files {split_files}: pass "
                     "overwrite=True or choose another name")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=mode))
  reports = builder.reports or {split: _report_from_dict(stored) for split, stored in
                                builder.info.metadata.get("reports", {}).items()}
  return builder, reports


def _report_from_dict(stored: Mapping) -> DataReport:
  report = DataReport(num_rows=stored["num_rows"], num_kept=stored["num_kept"])
  report.skipped.update(stored["skipped"])
  report.flagged.update(stored["flagged"])
  for reason, locations in stored["locations"].items():
    report.locations[reason].extend(locations)
  return report

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
- unpaired: ``prompt, completion`` (+ messages), ``label`` (int32 1 desirable, 0 not),
  ``weight``, ``source``.

Caching. A dataset is keyed by its content: :func:`dataset_fingerprint` holds, per split, each
file's path, size and SHA-256, plus every option that changes the stored rows (kind,
``on_error``, ``CACHE_FORMAT``); it is stored in ``info.metadata["fingerprint"]`` (with each
file's mtime, for the record). ``build_dataset`` reuses a dataset only when the fingerprint is
the same and rebuilds it otherwise: an edited file, or a cache built with ``on_error="skip"``
asked for with ``"raise"``, never yields the old rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxalign.data.files import iter_records
from jaxalign.data.records import KINDS, is_chat_record
from jaxalign.data.report import DataReport, check_policy

BUILDER_NAME = "jaxalign_local_files"
VERSION = "1.0.0"
CACHE_FORMAT = 2  # bump when parsing rows into records changes what is stored
TEXT_FIELDS = {"preference": ("prompt", "chosen", "rejected"), "prompt": ("prompt",),
               "sft": ("prompt", "response"), "unpaired": ("prompt", "completion")}
_LOG = logging.getLogger("jaxalign.data")


@dataclasses.dataclass
class LocalFilesConfig(tfds.core.BuilderConfig):
  """Which files make which split.

  Attributes:
    kind: ``"preference"``, ``"prompt"`` or ``"sft"``.
    split_files: split name -> paths (JSONL or Parquet; ``gs://`` paths work where the
      filesystem is installed).
    on_error: ``"raise"`` or ``"skip"`` for bad rows (see :mod:`jaxalign.data.report`).
    fingerprint: :func:`dataset_fingerprint` of the files and options (stored in metadata).
  """

  kind: str = "preference"
  split_files: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  on_error: str = "raise"
  fingerprint: Mapping = dataclasses.field(default_factory=dict, repr=False)


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
  if kind == "unpaired":
    features["weight"] = tfds.features.Scalar(np.float32)
    features["label"] = tfds.features.Scalar(np.int32)
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
  if kind == "unpaired":
    example["weight"] = np.float32(record["weight"])
    example["label"] = np.int32(record["label"])
  return example


class JaxalignLocalFiles(tfds.core.GeneratorBasedBuilder):
  """Local preference / prompt / SFT files as a TFDS dataset; one config per user dataset."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIG_CLS = LocalFilesConfig

  # TFDS prints "Downloading and preparing dataset ..." / "... downloaded and prepared to"
  # for every build (nothing is downloaded: the rows are local files); the run's data line
  # reports the rows instead.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    sources = {split: [str(p) for p in paths] for split, paths in config.split_files.items()}
    self.reports: dict[str, DataReport] = {}
    self._metadata = tfds.core.MetadataDict(kind=config.kind, source_files=sources,
                                            on_error=config.on_error, reports={},
                                            fingerprint=dict(config.fingerprint))
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


def file_fingerprint(path: str) -> dict:
  """``{"path", "size", "sha256", "mtime_ns"}`` of one file (read once, in 1 MiB chunks)."""
  file = epath.Path(path)
  if not file.exists():
    raise FileNotFoundError(f"{path}: no such file")
  digest, size = hashlib.sha256(), 0
  with file.open("rb") as handle:
    while chunk := handle.read(1 << 20):
      digest.update(chunk)
      size += len(chunk)
  try:
    mtime = int(file.stat().mtime * 1e9)
  except (AttributeError, OSError, TypeError):  # a filesystem without mtimes
    mtime = None
  return {"path": str(path), "size": size, "sha256": digest.hexdigest(), "mtime_ns": mtime}


def dataset_fingerprint(kind: str, split_files: Mapping[str, Sequence[str]],
                        on_error: str) -> dict:
  """What the stored rows depend on: every file's path, size and SHA-256 per split, the kind,
  ``on_error`` and ``CACHE_FORMAT``. (mtimes are recorded beside it, never compared: the
  hash decides, so a touched but unchanged file is reused and an edit that keeps the size
  and mtime is not.)"""
  return {"format": CACHE_FORMAT, "kind": kind, "on_error": on_error,
          "splits": {split: [file_fingerprint(p) for p in paths]
                     for split, paths in sorted(split_files.items())}}


def _key(fingerprint: Mapping | None) -> dict | None:
  """The compared part of a fingerprint (mtimes dropped)."""
  if not fingerprint:
    return None
  splits = {split: [{k: v for k, v in f.items() if k != "mtime_ns"} for f in files]
            for split, files in fingerprint.get("splits", {}).items()}
  return {**{k: v for k, v in fingerprint.items() if k != "splits"}, "splits": splits}


def _what_changed(stored: Mapping | None, current: Mapping) -> str:
  if not stored:
    return "it records no content fingerprint (built by an older jaxalign)"
  for key in ("format", "kind", "on_error"):
    if stored.get(key) != current[key]:
      return f"{key} was {stored.get(key)!r}, now {current[key]!r}"
  old = {f["path"]: f for files in stored["splits"].values() for f in files}
  for files in current["splits"].values():
    for f in files:
      if f["path"] not in old:
        return f"{f['path']} is a new source file"
      if old[f["path"]] != f:
        return f"{f['path']} changed (sha256 {old[f['path']]['sha256'][:12]} -> {f['sha256'][:12]})"
  return "its split files changed"


def build_dataset(name: str, kind: str, split_files: Mapping[str, str | Sequence[str]],
                  data_dir: str, on_error: str = "raise",
                  overwrite: bool = False) -> tuple[JaxalignLocalFiles, dict[str, DataReport]]:
  """Build (or reuse) the array_record dataset ``name`` from local files.

  Args:
    name: the dataset's name (the builder config name; a folder under ``data_dir``).
    kind: ``"preference"``, ``"prompt"``, ``"sft"`` or ``"unpaired"``.
    split_files: split -> path or paths, e.g. ``{"train": "train.jsonl", "test": [...]}``.
    data_dir: where TFDS writes the dataset (a local folder or ``gs://bucket/path``).
    on_error: ``"raise"`` or ``"skip"`` bad rows (counted in the returned reports).
    overwrite: rebuild even if an up-to-date dataset exists. Without it, an existing dataset
      is reused only when its content fingerprint (:func:`dataset_fingerprint`: the files'
      sizes and hashes, the kind, ``on_error``) is this call's, and rebuilt otherwise, so
      changed files or options never yield the old rows.

  Returns:
    ``(builder, reports)``: read with ``builder.as_data_source()``; ``reports`` maps split to
    the :class:`DataReport` of this build (restored from the stored metadata on reuse).
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  check_policy(on_error)
  split_files = {split: [paths] if isinstance(paths, str) else [str(p) for p in paths]
                 for split, paths in split_files.items()}
  try:
    fingerprint = dataset_fingerprint(kind, split_files, on_error)
  except FileNotFoundError:
    builder = _stored_copy(name, kind, split_files, data_dir, on_error)
    if builder is None:
      raise
    fingerprint = builder.info.metadata["fingerprint"]
  config = LocalFilesConfig(name=name, kind=kind, split_files=split_files, on_error=on_error,
                            fingerprint=fingerprint,
                            description=f"{kind} dataset from local files")
  builder = JaxalignLocalFiles(config=config, data_dir=data_dir, file_format="array_record")
  if builder.data_path.exists():
    stored = builder.info.metadata.get("fingerprint")
    if overwrite or _key(stored) != _key(fingerprint):
      _LOG.warning("rebuilding %s: %s", builder.data_path,
                   "overwrite=True" if overwrite else _what_changed(_key(stored),
                                                                    _key(fingerprint)))
      builder.data_path.rmtree()
      builder = JaxalignLocalFiles(config=config, data_dir=data_dir,
                                   file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  reports = builder.reports or {split: _report_from_dict(stored) for split, stored in
                                builder.info.metadata.get("reports", {}).items()}
  return builder, reports


def _stored_copy(name, kind, split_files, data_dir, on_error):
  """The existing dataset built from exactly these paths and options when a source file is
  gone (the stored copy is then all there is; a warning says so), else None."""
  config = LocalFilesConfig(name=name, kind=kind, split_files=split_files, on_error=on_error)
  builder = JaxalignLocalFiles(config=config, data_dir=data_dir, file_format="array_record")
  stored = builder.info.metadata.get("fingerprint") if builder.data_path.exists() else None
  paths = lambda fp: {s: [f["path"] for f in files] for s, files in fp["splits"].items()}
  if not stored or any(stored.get(k) != v for k, v in (
      ("format", CACHE_FORMAT), ("kind", kind), ("on_error", on_error))) or paths(
          stored) != {s: list(p) for s, p in sorted(split_files.items())}:
    return None
  _LOG.warning("%s: a source file is missing; reusing the copy built from it", builder.data_path)
  return builder


def _report_from_dict(stored: Mapping) -> DataReport:
  report = DataReport(num_rows=stored["num_rows"], num_kept=stored["num_kept"])
  report.skipped.update(stored["skipped"])
  report.flagged.update(stored["flagged"])
  for reason, locations in stored["locations"].items():
    report.locations[reason].extend(locations)
  return report

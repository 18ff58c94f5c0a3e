"""A run's rows from local data files (``data.source=files``), with the ``data.*`` knobs.

Each file is read through its own TFDS copy under ``data.cache_dir`` (default
``output_dir/tfds``), named by the file and kind and keyed by content
(``data.build_dataset``: sizes, hashes, kind, ``on_error``), then tokenised with
``data.max_length``, ``data.max_prompt_length`` and ``data.on_overflow``. Several files are
concatenated, or, for training with ``data.train_weights``, mixed by weight
(``data.MixedRows``). Kinds: ``task=sft`` reads SFT rows (a preference file trains on its
``chosen``); ``rm`` and ``dpo`` read pairs; ``dpo`` with ``loss.name=kto`` also reads TRL's
unpaired rows (a ``label`` per completion, ``data.detect_kind``). Prompt files (PPO, online
DPO) are read directly and cut to the prompt budget.
"""

from __future__ import annotations

import hashlib
import os
import re

from jaxalign import data as D
from jaxalign.config import ConfigError

TOKENIZE = {"sft": D.tokenize_sft, "preference": D.tokenize_preferences,
            "unpaired": D.tokenize_unpaired}


def cache_dir(run) -> str:
  return run.data.cache_dir or os.path.join(run.output_dir, "tfds")


def dataset_name(path: str, kind: str) -> str:
  """``<file stem>_<kind>_<hash of the absolute path>``: one cache entry per file and kind,
  so runs sharing a cache_dir reuse each other's copies (the content key decides)."""
  where = path if "://" in path else os.path.abspath(path)
  stem = os.path.basename(path).split(".")[0]
  digest = hashlib.sha1(where.encode()).hexdigest()[:8]
  return re.sub(r"[^a-z0-9_]", "_", f"{stem}_{kind}_{digest}".lower())


def _file_kind(run, path: str, split: str) -> str:
  kind = D.detect_kind(path, "sft" if run.task == "sft" else "preference")
  if kind == "unpaired" and not (run.task == "dpo" and run.loss.name == "kto"):
    raise ConfigError(f"data.{split}_file: {path} holds unpaired rows (a 'label' per "
                      f"completion): only `jaxalign train dpo --loss kto` trains on them, "
                      f"not task={run.task}" + (f" loss.name={run.loss.name}"
                                                if run.task == "dpo" else ""))
  return kind


def data_kind(run, split: str) -> str:
  """The record kind of the run's ``split`` files (module docstring); one per run."""
  kinds = {split_: {_file_kind(run, p, split_) for p in run.data.files(split_)}
           for split_ in ("train", "eval")}
  every = kinds["train"] | kinds["eval"]
  if len(every) > 1:
    raise ConfigError(f"data.train_file and data.eval_file mix unpaired (label) and paired "
                      f"rows: {kinds}; KTO trains and evaluates on one kind")
  return next(iter(kinds[split] or every), "preference")


def chain(read: D.DataReport, tokenized: D.DataReport) -> D.DataReport:
  """One report for reading then tokenising: rows counted once (as read), kept as
  tokenised, skips and flags of both stages."""
  merged = read.merge(tokenized)
  merged.num_rows, merged.num_kept = read.num_rows, tokenized.num_kept
  return merged


def _overflow(spec, prompts: bool = False) -> str:
  if spec.on_overflow is None:
    return "truncate" if prompts else "skip"
  return spec.on_overflow


def _combine(run, split: str, parts: list, reports: list, paths) -> tuple:
  for path, rows, report in zip(paths, parts, reports):
    if not len(rows):
      raise ValueError(f"data.{split}_file: {path} has no rows left ({report.summary()})")
  report = reports[0]
  for other in reports[1:]:
    report = report.merge(other)
  if len(parts) == 1:
    return parts[0], report
  weights = run.data.train_weights if split == "train" else None
  if weights is None:
    return D.concat_rows(parts), report
  return D.MixedRows(parts, weights, names=list(paths)), report


def file_rows(run, split: str, tokenizer):
  """(rows, report) of the ``split`` files, tokenised; a mixture when weighted."""
  spec, kind = run.data, data_kind(run, split)
  paths = spec.files(split)
  if not paths:
    raise ConfigError(f"data.{split}_file is required when data.source=files")
  parts, reports = [], []
  for path in paths:
    if "://" not in path and not os.path.exists(path):
      raise FileNotFoundError(f"data.{split}_file: {path} does not exist")
    builder, built = D.build_dataset(dataset_name(path, kind), kind, {"train": path},
                                     cache_dir(run), on_error=spec.on_error)
    records = D.RecordSource(builder.as_data_source("train"), kind, name=path)
    rows, report = TOKENIZE[kind](records, tokenizer, spec.max_length,
                                  max_prompt_length=spec.max_prompt_length,
                                  on_overflow=_overflow(spec), on_error=spec.on_error)
    parts.append(rows)
    reports.append(chain(built.get("train", D.DataReport()), report))
  return _combine(run, split, parts, reports, paths)


def prompt_budget(run, max_new_tokens: int) -> int:
  """Prompt tokens of online training: ``data.max_prompt_length`` if set (it must leave room
  for ``max_new_tokens``), else ``data.max_length - max_new_tokens``."""
  room = run.data.max_length - max_new_tokens
  if run.data.max_prompt_length is None:
    return room
  if run.data.max_prompt_length > room:
    raise ConfigError(f"data.max_prompt_length={run.data.max_prompt_length} leaves no room for "
                      f"{max_new_tokens} new tokens in data.max_length={run.data.max_length}")
  return run.data.max_prompt_length


def prompt_file_rows(run, split: str, tokenizer, max_new_tokens: int):
  """(PromptRows or a mixture, report) of the ``split`` prompt files."""
  spec = run.data
  paths = spec.files(split)
  parts, reports = [], []
  for path in paths or [None]:
    if path is None or not os.path.exists(str(path)):
      raise FileNotFoundError(f"data.{split}_file: {path} does not exist")
    records, read = D.read_records(path, "prompt", on_error=spec.on_error)
    rows, report = D.tokenize_prompts(records, tokenizer, prompt_budget(run, max_new_tokens),
                                      on_overflow=_overflow(spec, prompts=True),
                                      on_error=spec.on_error)
    parts.append(rows)
    reports.append(chain(read, report))
  return _combine(run, split, parts, reports, paths)


def is_unpaired(rows) -> bool:
  """Rows (possibly a mixture or a cached reference around them) of unpaired examples."""
  while rows is not None and not isinstance(rows, D.UnpairedRows):
    inner = rows.__dict__.get("rows") if hasattr(rows, "__dict__") else None
    if inner is None:
      return False
    rows = inner
  return rows is not None

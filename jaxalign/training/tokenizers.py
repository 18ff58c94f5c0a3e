"""Which tokenizer a run uses, and the tokenizer files every model folder carries.

``run_tokenizer(run)`` is the one place a run's tokenizer is chosen; first match wins:

1. ``data.source=synthetic`` / ``verifiable``: the built-in task's own tokenizer.
2. ``data.tokenizer``: ``bytes`` (:class:`ByteTokenizer`) or a folder with tokenizer.json.
3. ``model.init_from``: the tokenizer recorded in that jaxalign model folder.
4. ``model.path``: the Hugging Face folder's tokenizer.json.

Otherwise a ``TokenizerError`` naming these keys. ``save_run_model`` writes a model folder
with its tokenizer: the files of rule 2-4 copied in (``TOKENIZER_FILES``) and
``generation_config.json`` when the source model has one; ``jaxalign_config.json`` records
``{"kind": "hf" | "bytes" | "synthetic" | "verifiable", ...}``, so ``model_tokenizer(folder)``
(sample, eval, export, a later run's ``model.init_from``) needs no tokenizer flag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings

import numpy as np

from jaxalign import data as D
from jaxalign.models.params_io import CONFIG_FILE, read_model_meta, save_model

BYTES = "bytes"
VERIFIABLE = "verifiable"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model")
GENERATION_CONFIG = "generation_config.json"
RUN_CONFIG = "run_config.yaml"
UNKNOWN_WARN_FRACTION = 0.5
_OPTION_KEYS = ("pad_token", "pad_id", "chat_template")  # data.* keys, when the schema has them


def tokenizer_options(run) -> dict:
  """The ``data.*`` keys that change how a tokenizer folder is read (``from_folder`` kwargs);
  a ``chat_template`` that names a file is read, so the recorded options are self-contained."""
  options = {k: getattr(run.data, k) for k in _OPTION_KEYS
             if getattr(run.data, k, None) is not None}
  template = options.get("chat_template")
  if template and "{" not in template and os.path.isfile(template):
    with open(template, encoding="utf-8") as f:
      options["chat_template"] = f.read()
  return options


def _is_jaxalign_folder(folder: str) -> bool:
  return os.path.exists(os.path.join(folder, CONFIG_FILE))


def model_tokenizer(folder: str, **options) -> D.Tokenizer:
  """The tokenizer of a model folder: a jaxalign one (its record) or a Hugging Face one (its
  tokenizer.json). Raises ``TokenizerError`` naming the folder when it has none."""
  if _is_jaxalign_folder(folder):
    record = read_model_meta(folder)[2].get("tokenizer")
    if record is None and not os.path.exists(os.path.join(folder, "tokenizer.json")):
      raise D.TokenizerError(f"{folder}: records no tokenizer (a model folder written before "
                             "tokenizers travelled with models)")
    record = record or {"kind": "hf"}
    if record["kind"] == BYTES:
      return D.byte_tokenizer(**{**record.get("options", {}), **options})
    if record["kind"] == "synthetic":
      return D.SyntheticTokenizer(record["vocab_size"])
    if record["kind"] == VERIFIABLE:
      return D.VerifiableTokenizer()
    options = {**record.get("options", {}), **options}
  elif not os.path.exists(os.path.join(folder, "tokenizer.json")):
    raise D.TokenizerError(f"{folder}: no tokenizer.json")
  return D.HFTokenizer.from_folder(folder, **options)


def tokenizer_source(run) -> tuple[str, str | None]:
  """``(kind, folder)`` of the run's tokenizer: ("synthetic" | "verifiable" | "bytes", None),
  ("folder", data.tokenizer) or ("model", the model folder whose tokenizer it is)."""
  if run.data.source in ("synthetic", VERIFIABLE):
    return run.data.source, None
  if run.data.tokenizer == BYTES:
    return BYTES, None
  if run.data.tokenizer:
    return "folder", run.data.tokenizer
  for key in ("init_from", "path"):
    folder = getattr(run.model, key)
    if folder:
      return "model", folder
  raise D.TokenizerError(
      "data.source=files needs a tokenizer and none is set: use model.path (a Hugging Face "
      "folder with tokenizer.json), model.init_from (a jaxalign model folder) or "
      "data.tokenizer (a folder with tokenizer.json, or 'bytes' for byte-level ids)")


def run_tokenizer(run) -> D.Tokenizer:
  """The run's tokenizer (module docstring); errors name the key that chose the folder."""
  kind, folder = tokenizer_source(run)
  if kind == "synthetic":
    return D.SyntheticTokenizer(D.SyntheticTaskConfig(seed=run.data.task_seed).vocab_size)
  if kind == VERIFIABLE:
    return D.VerifiableTokenizer()
  if kind == BYTES:  # data.pad_id / data.chat_template still apply
    return D.byte_tokenizer(**tokenizer_options(run))
  key = "data.tokenizer" if kind == "folder" else (
      "model.init_from" if folder == run.model.init_from else "model.path")
  if not os.path.isdir(folder):
    raise D.TokenizerError(f"{key}={folder}: not a folder")
  try:
    if kind == "folder":
      if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        raise D.TokenizerError(f"{folder}: no tokenizer.json")
      return D.HFTokenizer.from_folder(folder, **tokenizer_options(run))
    return model_tokenizer(folder, **tokenizer_options(run))
  except D.TokenizerError as error:
    hint = ("" if kind == "folder" else "; set data.tokenizer to a folder with tokenizer.json, "
            "or data.tokenizer=bytes for byte-level ids")
    raise D.TokenizerError(f"{key}: {error}{hint}") from None


def tokenizer_fingerprint(tokenizer) -> str:
  """A short hash of what ids mean: equal fingerprints, same token -> id map."""
  backend = getattr(tokenizer, "backend", None)
  if backend is None:
    return f"{type(tokenizer).__name__}:{tokenizer.vocab_size}"
  vocab = sorted(backend.get_vocab(with_added_tokens=True).items())
  return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def copy_files(source: str, dest: str, names) -> None:
  """Copies each of ``names`` that ``source`` has into ``dest``, and removes from ``dest``
  those ``source`` lacks (no stale tokenizer file of an earlier run survives)."""
  if os.path.abspath(source) == os.path.abspath(dest):
    return
  for name in names:
    if os.path.exists(os.path.join(source, name)):
      shutil.copyfile(os.path.join(source, name), os.path.join(dest, name))
    elif os.path.exists(os.path.join(dest, name)):
      os.remove(os.path.join(dest, name))


def copy_tokenizer(run, path: str) -> dict:
  """Copies the run's tokenizer files (and the source model's generation_config.json) into
  model folder ``path``; returns the record for ``jaxalign_config.json``."""
  os.makedirs(path, exist_ok=True)
  model_folder = run.model.init_from or run.model.path
  if model_folder and os.path.isdir(model_folder):
    copy_files(model_folder, path, (GENERATION_CONFIG,))
  kind, folder = tokenizer_source(run)
  if kind in ("synthetic", VERIFIABLE, BYTES):  # built in: no files (none left from before)
    for name in TOKENIZER_FILES:
      if os.path.exists(os.path.join(path, name)):
        os.remove(os.path.join(path, name))
  if kind == "synthetic":
    return {"kind": "synthetic", "vocab_size": run_tokenizer(run).vocab_size}
  if kind == VERIFIABLE:
    return {"kind": VERIFIABLE, "vocab_size": run_tokenizer(run).vocab_size}
  if kind == BYTES:
    return {"kind": BYTES, "options": tokenizer_options(run)}
  options = tokenizer_options(run)
  if kind == "model" and _is_jaxalign_folder(folder):
    record = read_model_meta(folder)[2].get("tokenizer") or {"kind": "hf"}
    if record["kind"] != "hf":
      return record
    options = {**record.get("options", {}), **options}
  copy_files(folder, path, TOKENIZER_FILES)
  return {"kind": "hf", "options": options, "copied_from": os.path.abspath(folder)}


def save_run_model(run, path: str, config, params, kind: str = "policy") -> None:
  """``save_model`` plus what travels with a model: its tokenizer (``copy_tokenizer``) and
  the run's resolved config (``run_config.yaml``, read by ``jaxalign eval``)."""
  from jaxalign.config import save_config  # the config schema imports the training modules
  record = copy_tokenizer(run, path)
  save_model(path, config, params, kind=kind, tokenizer=record)
  save_config(_absolute_paths(run), os.path.join(path, RUN_CONFIG))


def _absolute_paths(run):
  """``run`` with its existing local paths absolute (run_config.yaml is read from anywhere)."""
  absolute = lambda v: os.path.abspath(v) if isinstance(v, str) and os.path.exists(v) else v

  def fix(section, keys):
    values = {k: getattr(section, k, None) for k in keys}
    return dataclasses.replace(section, **{
        k: tuple(map(absolute, v)) if isinstance(v, (list, tuple)) else absolute(v)
        for k, v in values.items() if v is not None})
  return dataclasses.replace(
      run, model=fix(run.model, ("path", "init_from", "reference_from")),
      data=fix(run.data, ("train_file", "eval_file", "tokenizer")),
      online=fix(run.online, ("reward_model",)))


def unknown_fraction(rows, tokenizer) -> tuple[float, int | None]:
  """(fraction of the rows' tokens that are the unknown token, its id); (0, None) when the
  tokenizer has no unknown token (byte-level BPE, bytes)."""
  token = (getattr(tokenizer, "special_tokens", None) or {}).get("unk_token")
  backend = getattr(tokenizer, "backend", None)
  unk = backend.token_to_id(token) if token and backend is not None else None
  if unk is None:
    return 0.0, None
  pieces = [getattr(rows, field) for field in ("prompts", "chosen", "rejected", "responses")
            if hasattr(rows, field)]
  ids = [np.asarray(x) for piece in pieces for x in piece]
  total = sum(len(x) for x in ids)
  return (sum(int((x == unk).sum()) for x in ids) / total if total else 0.0), unk


def warn_unknown_tokens(rows, tokenizer, where: str) -> None:
  """Warns when most tokens of ``rows`` are the unknown token (the wrong tokenizer)."""
  fraction, unk = unknown_fraction(rows, tokenizer)
  if fraction > UNKNOWN_WARN_FRACTION:
    warnings.warn(f"{where}: {fraction:.0%} of the tokens are the unknown token (id {unk}); "
                  "is this the tokenizer of the model and the data?", stacklevel=2)

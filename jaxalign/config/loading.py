"""Dataclass configs from YAML/JSON files plus ``--set key=value`` overrides.

An unknown key is an error that names it and suggests the nearest valid one; values are
coerced to the field's declared type (so ``--set optimizer.learning_rate=1e-4`` is a float).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
  """A config file or override that cannot be applied; the message names the key."""


def _field_types(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def valid_keys(cls, prefix: str = "") -> list[str]:
  """Every dotted key of a (nested) config dataclass."""
  keys = []
  for name, kind in _field_types(cls).items():
    if name.startswith("_"):
      continue
    keys.append(prefix + name)
    if dataclasses.is_dataclass(kind):
      keys.extend(valid_keys(kind, f"{prefix}{name}."))
  return keys


def _unknown(key: str, cls, where: str) -> ConfigError:
  close = difflib.get_close_matches(key, valid_keys(cls), n=1, cutoff=0.5)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def _coerce(value: Any, kind: Any, key: str, where: str) -> Any:
  origin = typing.get_origin(kind)
  if origin in (typing.Union, types.UnionType):
    options = typing.get_args(kind)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
      if type(None) in options:
        return None
    errors = []
    for option in options:
      if option is type(None):
        continue
      try:
        return _coerce(value, option, key, where)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: bad value for {key!r}")
  if origin is typing.Literal:
    if value not in typing.get_args(kind):
      raise ConfigError(f"{where}: {key}={value!r} is not one of {typing.get_args(kind)}")
    return value
  try:
    if kind is bool:
      if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
          raise ValueError(value)
        return value.lower() in ("true", "1", "yes")
      return bool(value)
    if kind is int:
      if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
      return int(value)
    if kind is float:
      return math.inf if str(value).lower() in ("inf", ".inf") else float(value)
    if kind is str:
      return str(value)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{where}: {key}={value!r} is not a valid {kind.__name__}") from e
  if origin in (tuple, list):
    return tuple(value) if origin is tuple else list(value)
  return value


def from_dict(cls, data: dict, where: str = "config", prefix: str = "", root=None):
  """Builds dataclass ``cls`` from a nested dict, checking every key (``root`` is the
  top-level config class, for suggestions)."""
  root = root or cls
  if not isinstance(data, dict):
    raise ConfigError(f"{where}: {prefix or 'top level'} must be a mapping, got {data!r}")
  types_ = _field_types(cls)
  kwargs = {}
  for key, value in data.items():
    full = prefix + key
    if key not in types_:
      raise _unknown(full, root, where)
    kind = types_[key]
    if dataclasses.is_dataclass(kind):
      kwargs[key] = from_dict(kind, value, where, f"{full}.", root)
    else:
      kwargs[key] = _coerce(value, kind, full, where)
  return cls(**kwargs)


def to_dict(config) -> dict:
  return dataclasses.asdict(config)


def set_dotted(data: dict, key: str, value: Any) -> None:
  node = data
  parts = key.split(".")
  for part in parts[:-1]:
    node = node.setdefault(part, {})
    if not isinstance(node, dict):
      raise ConfigError(f"--set {key}: {part!r} is not a section")
  node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
  if "=" not in text:
    raise ConfigError(f"--set {text!r}: expected key=value")
  key, raw = text.split("=", 1)
  try:
    value = yaml.safe_load(raw) if raw else ""
  except yaml.YAMLError:
    value = raw
  return key.strip(), value


def load_config(cls, path: str | None = None, overrides: list[str] = (), base: dict | None = None):
  """``cls`` from ``base`` (defaults of a preset), then the file, then ``--set`` overrides."""
  data: dict = json.loads(json.dumps(base or {}))
  where = "defaults"
  if path:
    if not os.path.exists(path):
      raise ConfigError(f"{path}: config file not found")
    with open(path) as f:
      try:
        loaded = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
      except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot parse: {e}") from e
    if isinstance(loaded, dict):  # a run's config.yaml: its provenance is not config
      loaded.pop("provenance", None)
    _merge(data, loaded or {})
    where = path
  if overrides:
    where = f"{where} + --set"
  for text in overrides:
    key, value = parse_override(text)
    if key not in valid_keys(cls):
      raise _unknown(key, cls, "--set")
    set_dotted(data, key, value)
  return from_dict(cls, data, where)


def _merge(into: dict, new: dict) -> None:
  for key, value in new.items():
    if isinstance(value, dict) and isinstance(into.get(key), dict):
      _merge(into[key], value)
    else:
      into[key] = value


def save_config(config, path: str, provenance: dict | None = None) -> None:
  """Writes the resolved config (YAML) next to a run's outputs, with a ``provenance:``
  section when given (ignored by ``load_config``)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  data = to_dict(config)
  if provenance is not None:
    data["provenance"] = provenance
  with open(path, "w") as f:
    yaml.safe_dump(data, f, sort_keys=False)

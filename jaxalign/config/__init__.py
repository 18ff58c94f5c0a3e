"""Run configuration: dataclasses, YAML/JSON loading, --set overrides."""

from jaxalign.config.loading import (ConfigError, from_dict, load_config, parse_override,
                                     save_config, to_dict, valid_keys)
from jaxalign.config.schema import DataSpec, LossSpec, ModelSpec, OnlineSpec, RunConfig

__all__ = ["ConfigError", "DataSpec", "LossSpec", "ModelSpec", "OnlineSpec", "RunConfig", "from_dict",
           "load_config", "parse_override", "save_config", "to_dict", "valid_keys"]

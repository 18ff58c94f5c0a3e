"""Errors that are the user's input (config, files, names): shown as one line, exit 2."""

from jaxalign.config import ConfigError
from jaxalign.data import DataError, TokenizerError
from jaxalign.models import CheckpointError

USER_ERRORS = (ConfigError, DataError, TokenizerError, CheckpointError, FileNotFoundError,
               ValueError)

"""Process setup for the ``jaxalign`` command, before JAX starts: a persistent compilation
cache and quieter libraries (TFDS / absl build chatter); the exit codes of a stopped run."""

from __future__ import annotations

import logging
import os
import sys

CACHE_ENV = "JAXALIGN_COMPILATION_CACHE"  # a folder; "off" (or "", "0", "none") disables
DEFAULT_CACHE = os.path.join("~", ".cache", "jaxalign", "xla")
EXIT_DIVERGED = 3  # the NaN guard stopped the run (2: a user error, 128 + N: signal N)


def compilation_cache_dir() -> str | None:
  path = os.environ.get(CACHE_ENV, DEFAULT_CACHE)
  if path.strip().lower() in ("", "0", "off", "none", "false"):
    return None
  return os.path.expanduser(path)


def enable_compilation_cache() -> None:
  """Compiled programs persist across runs in ``$JAXALIGN_COMPILATION_CACHE`` (default
  ~/.cache/jaxalign/xla), unless the user chose a JAX cache (JAX_COMPILATION_CACHE_DIR or
  ``jax.config``) or turned it off."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  path = compilation_cache_dir()
  if path is None:
    return
  if "jax" in sys.modules:  # started in-process (tests): configure JAX directly
    import jax
    if not jax.config.jax_compilation_cache_dir:
      jax.config.update("jax_compilation_cache_dir", path)
    return
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # read when JAX is imported


class _DropLibraryChatter(logging.Filter):
  """Drops TFDS's info / warning records ("Using custom data configuration ...") that absl
  logging forwards; errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or "tensorflow_datasets" not in record.pathname


def quiet_libraries() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ logs, if it is used
  try:  # absl's own logger class finds the real caller (the TFDS file) of each record
    from absl import logging as absl_logging
  except ImportError:
    return
  absl_logging.get_absl_logger().addFilter(_DropLibraryChatter())


def disable_tfds_progress() -> None:
  """TFDS's own progress bars ("Generating splits...", "Shuffling ...")."""
  try:
    from tensorflow_datasets.core.utils import tqdm_utils
  except ImportError:
    return
  tqdm_utils.disable_progress_bar()

"""Shared test setup: offline Hugging Face, a persistent JAX compilation cache, and tiny
random-weight reference models built with transformers and saved to a temp dir."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Eight CPU devices for the mesh tests. The tests' models are tiny, so compiling dominates:
# LLVM at opt-level 0 cut the cold mesh step tests by about a fifth (the HLO passes and
# fusions are a user's; only the machine code is less optimized; benchmarks keep the default
# level). tests/training/subprocess_runs.py passes it to its children too.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = os.environ.get("JAXALIGN_TEST_CACHE",
                        os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

from tests import hf_reference  # noqa: E402

_SLOW_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")


def _listed_slow() -> set[str]:
  with open(_SLOW_LIST) as f:
    return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
  """The node ids of tests/slow_tests.txt get the ``slow`` mark (``make test`` skips them)."""
  listed = _listed_slow()
  for item in items:
    if item.nodeid in listed:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def hf_model_dirs(tmp_path_factory):
  """{family: folder} of tiny random HF checkpoints (gpt2, llama, qwen2, mistral)."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  root = tmp_path_factory.mktemp("hf_models")
  return {name: hf_reference.build_and_save(name, str(root / name))
          for name in hf_reference.FAMILIES}


@pytest.fixture
def x64():
  """float64 for gradient checks; switched back off afterwards."""
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)

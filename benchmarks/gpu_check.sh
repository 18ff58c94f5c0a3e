#!/usr/bin/env bash
# GPU check of the sampler (greedy parity + throughput vs transformers) on an NVIDIA machine.
# Usage: bash benchmarks/gpu_check.sh   (creates .venv-gpu; needs pip access to PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q -U pip
.venv-gpu/bin/pip install -q -e . "jax[cuda12]" torch transformers
# The default XLA preallocation (75% of GPU memory) would starve torch in the same process.
XLA_PYTHON_CLIENT_PREALLOCATE=false .venv-gpu/bin/python -m benchmarks.gpu_check

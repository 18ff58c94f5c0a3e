# Two commands on a fresh clone with only python3 (3.11): `make demo` and `make test`.
# Each creates .venv (once) and installs what it needs from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all plan-tpu-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.base
	$(BIN)/jaxalign demo

test: $(VENV)/.test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" --durations=25

test-all: $(VENV)/.test  # with the long end-to-end runs (@pytest.mark.slow)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# A tiny `jaxalign plan` compiled by libtpu for a v5e-4 slice (no TPU needed), in .venv-tpu.
TPU_VENV := .venv-tpu
$(TPU_VENV)/.tpu: pyproject.toml
	$(PYTHON) -m venv $(TPU_VENV)
	$(TPU_VENV)/bin/pip install -q -U pip
	$(TPU_VENV)/bin/pip install -q -e ".[tpu]"
	touch $@

plan-tpu-smoke: $(TPU_VENV)/.tpu
	$(TPU_VENV)/bin/jaxalign plan dpo --topology v5e:2x2 --set model.preset=tiny_gpt2 \
	  --set data.max_length=64 --set data.batch_size=8 --set mesh.data=1 --set mesh.fsdp=4 \
	  --json $(TPU_VENV)/plan_smoke.json

clean:
	rm -rf $(VENV) $(TPU_VENV) .jax_cache .pytest_cache

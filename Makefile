# Two commands on a fresh clone with only python3 (3.11): `make demo` and `make test`.
# Each creates .venv (once) and installs what it needs from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all clean

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

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache

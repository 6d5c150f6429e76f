# The few commands people type. Every target bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-all bench demo sandbox clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow"

test-all: lint
	HYPOTHESIS_PROFILE=all $(BIN)/pytest

# Not part of `make test`: minutes of wall time, and figures for the README, not assertions.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python tests/bench/bench.py

demo: $(STAMP)
	$(BIN)/connect-bulk demo

sandbox: $(STAMP)
	$(BIN)/connect-bulk sandbox

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

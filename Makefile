# The few commands people type. Every target bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-all bench demo sandbox docs-charts clean

# Strict editable mode: the installed namespace (connect_bulk.pipeline, connect_bulk.jobs) is a
# link tree that mypy can read; a new module needs `make install` again (its stamp is the list
# of modules too).
MODULES := $(wildcard pipeline/*.py pipeline/sandbox/*.py jobs/*.py)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=strict -e '.[dev]'
	echo $(MODULES) > $(STAMP)

# Reinstall when a module is added or removed (the link tree lists files, not folders).
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(MODULES))
.PHONY: $(STAMP)
endif

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
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=strict -e '.[dev,bench]'
	$(BIN)/python tests/bench/bench.py

# The README's pictures of the notebooks' charts, drawn from runs against a sandbox.
docs-charts: $(STAMP)
	$(BIN)/python tests/docs_charts.py docs/charts

demo: $(STAMP)
	$(BIN)/connect-bulk demo

sandbox: $(STAMP)
	$(BIN)/connect-bulk sandbox

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache

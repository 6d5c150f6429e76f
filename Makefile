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

# Dependencies come from uv.lock (exact versions and hashes, the same on every machine); the
# package itself is installed editable in setuptools' strict mode, without dependencies.
UV_VERSION := 0.13.9
UV := $(BIN)/uv

$(STAMP): pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) export --frozen --quiet --extra dev --no-emit-project -o $(VENV)/requirements.txt
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--config-settings editable_mode=strict -e .
	echo $(MODULES) > $(STAMP)

# Reinstall when a module is added or removed (the link tree lists files, not folders).
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(MODULES))
.PHONY: $(STAMP)
endif

install: $(STAMP)

lint: $(STAMP)
	$(UV) lock --check --quiet
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow"

test-all: lint
	HYPOTHESIS_PROFILE=all $(BIN)/pytest

# Not part of `make test`: minutes of wall time, and figures for the README, not assertions.
bench: $(STAMP)
	$(UV) export --frozen --quiet --extra dev --extra bench --no-emit-project \
		-o $(VENV)/requirements-bench.txt
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python \
		-r $(VENV)/requirements-bench.txt
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

# The two front-door commands: `make demo` and `make test`. Both create .venv when missing:
# the demo installs what it runs and what it suggests next (duckflock with its [cli] and
# [server] extras, so the README's `duckflock serve` works), the tests the dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-cli
DEV := $(VENV)/.installed-dev
BENCH := $(VENV)/.installed-bench

.PHONY: demo test system-deps lint format typecheck install clean bench docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[cli,server]'
	touch $(RUNTIME)

$(DEV): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV) $(RUNTIME)

install: $(DEV)

demo: $(RUNTIME)
	$(BIN)/duckflock demo

# Debian's chromium (browser tests) and curl (the HTTP docs' examples): installed with
# apt when missing, or one sentence saying what to install
system-deps:
	@.ci/system-deps

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-logo

format: $(DEV)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

typecheck: $(DEV)
	$(BIN)/mypy

# The suite starts many Python processes (the CLI, servers, crash-loop children, docs):
# where the environment sets PYTHONDONTWRITEBYTECODE (this machine's does), each compiled the
# package's modules from source again, ~0.25 s of CPU a process; here they are compiled
# once, into the gitignored __pycache__/ directories
test: system-deps lint typecheck
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest

# issue 21's table in one command (the quick set, a few minutes; the 20M-row set is
# `$(BIN)/python benchmarks/suite.py --large`). The peers (Pathway, chDB) are the optional
# [bench] extra: when they cannot be installed their columns say "not installed".
$(BENCH): $(DEV)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]' || echo "bench extra not installed: the peer columns will say so"
	touch $(BENCH)

bench: $(BENCH)
	$(BIN)/python benchmarks/suite.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

docs: $(DEV)
	$(BIN)/python -c "from duckflock.cli import reference; print(reference(), end='')" > docs/cli.md

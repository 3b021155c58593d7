# SignalBeam Edge — developer entry points. `make test` works from a fresh clone as root:
# it installs what is missing (Debian packages, venv, Python packages), then runs the suite.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup system-deps venv test lint bench demo demo-stop clean

setup: system-deps venv

system-deps:
	bash deploy/dev/system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# A hub, three agents managing real containers, warehouse-monitor rolled out; left running in
# the background (state and logs in /var/tmp/signalbeam-demo) until `make demo-stop`.
demo: setup
	$(BIN)/python deploy/dev/demo.py up $(DEMO_ARGS)

# Stops everything `make demo` started and removes its state.
demo-stop:
	$(BIN)/python deploy/dev/demo.py stop $(DEMO_ARGS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: run demo test lint typecheck bench clean emulator deps

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (Azure Functions runs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(STAMP) $(NPM_STAMP)

## make test: install what the tests need, start Azurite and the emulators per session, run everything
test: deps lint typecheck
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

## make run: the local stack (Azurite, ServiceNow emulator, local Functions host) and the demo; Ctrl-C stops it
run: deps
	$(PY) -m tools.localstack

## make demo: the same stack, the demo once, then exit
demo: deps
	$(PY) -m tools.localstack --once

emulator: $(STAMP)
	$(PY) -m tools.servicenow_emulator --port 8443

## make bench: the benchmarks; results are written under bench/results/
bench: deps
	$(PY) -m bench.servicenow_client
	$(PY) -m bench.funchost_dispatch
	$(PY) -m bench.forwarding
	$(PY) -m bench.tokens

clean:
	rm -rf $(VENV) node_modules .local .azurite .pytest_cache .mypy_cache .ruff_cache

# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: run demo test lint typecheck infra-check bench clean emulator deps

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (Azure Functions runs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(STAMP) $(NPM_STAMP)

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

## make test: install what the tests need, start Azurite and the emulators per session, run everything
test: deps lint typecheck infra-check
	$(PY) -m pytest

## the Bicep templates against checkov's rules (offline; every skipped check carries its reason in the template)
infra-check: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov -d infra/bicep --framework bicep --skip-download --compact --quiet

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
	$(PY) -m bench.device_sync --sizes 10000

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .local .azurite .pytest_cache .mypy_cache .ruff_cache

# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: help run demo emulators test lint typecheck architecture security infra-check bench fault-campaign clean emulator deps

## make help: this list
help:
	@awk '/^## make /{sub(/^## /, ""); print "  " $$0}' $(MAKEFILE_LIST)

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

## make test: install what the tests need, check lint, types, the layers, bandit and Bicep, run the suite
test: deps lint typecheck architecture security infra-check
	$(PY) -m pytest

## make architecture: the import-linter contracts (pyproject.toml): shared's layers point one way
architecture: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

## make infra-check: the Bicep templates against checkov's rules (offline; each skipped check has its reason)
# A check that crashes ("Failed to run check") counts as failed: checkov itself would still report 0 failures.
# CKV_AZURE_189 crashes on keyvault.bicep's conditional publicNetworkAccess (checkov 3.3.30: AttributeError) and
# checkov runs a check the template skips anyway, so it is skipped here; its reason is in keyvault.bicep.
CHECKOV_SKIP := CKV_AZURE_189
INFRA_DIR := infra/bicep
infra-check: $(CHECKOV_STAMP)
	@log=$$(mktemp); \
	$(CHECKOV_VENV)/bin/checkov -d $(INFRA_DIR) --framework bicep --skip-download --compact --quiet \
	  $(if $(CHECKOV_SKIP),--skip-check $(CHECKOV_SKIP)) 2>&1 | tee $$log; \
	status=$${PIPESTATUS[0]}; \
	if grep -q "Failed to run check" $$log; then \
	  echo "infra-check: a checkov check crashed (above); fix the template or skip the check with its reason" >&2; \
	  status=1; \
	fi; \
	rm -f $$log; exit $$status

## make lint: ruff check and ruff format --check
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## make typecheck: mypy, strict
typecheck: $(STAMP)
	$(PY) -m mypy

## make security: bandit over everything that runs (findings fixed, or `# nosec <id>` with the reason)
security: $(STAMP)
	@# bandit warns about every nosec on a multi-line literal; its findings and errors still show
	$(PY) -m bandit -q -c pyproject.toml -r shared functions function_app.py tools bench 2> >(grep -v '\bWARNING\b' >&2)

## make run: the local stack (Azurite, ServiceNow emulator, local Functions host) and the demo; Ctrl-C stops it
run: deps
	$(PY) -m tools.stack.localstack

## make demo: the same stack, the demo once, then exit
demo: deps
	$(PY) -m tools.stack.localstack --once

## make emulators: Azurite and the emulators with the secrets in place, for `func start` beside them; Ctrl-C stops
emulators: deps
	$(PY) -m tools.stack.localstack --emulators-only

## make emulator: the ServiceNow emulator alone on https://localhost:8443
emulator: $(STAMP)
	$(PY) -m tools.emulators.servicenow --port 8443

## make bench: the benchmarks; results are written under bench/results/
bench: deps
	$(PY) -m bench.servicenow_client
	$(PY) -m bench.funchost_dispatch
	$(PY) -m bench.forwarding
	$(PY) -m bench.tokens
	$(PY) -m bench.device_sync --sizes 10000
	$(PY) -m bench.device_sync --sizes 100000 --no-compare --latencies 0 50 --output bench/results/device_sync_100k.md
	$(PY) -m bench.device_sync_realistic --sizes 10000 --output bench/results/device_sync_realistic_10k.md
	$(PY) -m bench.device_sync_realistic --sizes 100000
	$(PY) -m bench.cloud_sync --sizes 100000
	$(PY) -m bench.end_to_end
	$(PY) -m bench.cold_start
	$(PY) -m bench.intake
	$(PY) -m bench.writeback
	$(PY) -m bench.overheads
	$(PY) -m bench.overheads --assets
	$(PY) -m bench.alert_assets
	$(PY) -m bench.storm
	$(PY) -m bench.telemetry_flush --alerts 60
	$(PY) -m tools.campaign --output bench/results/fault_campaign.md

## make fault-campaign: 10,000 alerts under every fault the product is built for; 0 lost, 0 duplicated or it fails
fault-campaign: deps
	$(PY) -m tools.campaign

## make clean: remove the virtual environments, node_modules and local state
clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .local .azurite .pytest_cache .mypy_cache .ruff_cache

# Two commands on a fresh machine:
#   make demo   - install, start Kafka, run a worker and simulated traffic, print a summary
#   make test   - install (incl. Debian's clickhouse-server and chromium), run every test on real services
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DURATION ?= 60
RATE     ?= 200
PYTEST_ARGS ?=

export TOUCHPOINT_HOME ?= $(CURDIR)/.touchpoint

.PHONY: help setup demo test unit integration lint clickhouse-server browser services-start services-stop bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create the virtualenv and install touchpoint with dev tools

# setup.py compiles the modules of touchpoint/compiled.py: a change to one builds them again
$(VENV)/.installed: pyproject.toml setup.py touchpoint/compiled.py $(wildcard schemas/*.py streams/rules/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "installing touchpoint and compiling its rules with mypyc (about a minute; log: $(VENV)/install.log)"
	@$(BIN)/pip install -q -e '.[dev]' > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	touch $@

demo: setup  ## run the whole pipeline for DURATION seconds (default 60) at RATE events/s (200)
	$(BIN)/touchpoint demo --duration $(DURATION) --rate $(RATE)

clickhouse-server:  ## install Debian's clickhouse-server (18.16) when it is missing
	bash deploy/local/clickhouse.sh install

browser:  ## install Debian's chromium and chromium-driver (the dashboard's browser test)
	bash deploy/local/browser.sh install

# The unit tests run a second time on the Python sources of the compiled modules.
test: setup clickhouse-server browser  ## every test, against real Kafka, chdb and ClickHouse server
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	TOUCHPOINT_PURE_PYTHON=1 $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

unit: setup  ## fast tests, no services (compiled, then on the Python sources)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)
	TOUCHPOINT_PURE_PYTHON=1 $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: setup clickhouse-server browser  ## tests against the real services only
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: setup  ## ruff and mypy
	$(BIN)/ruff check touchpoint streams schemas sinks tests
	$(BIN)/mypy touchpoint streams schemas sinks

services-start: setup  ## start local Kafka (and ClickHouse server when installed)
	$(BIN)/touchpoint services start

services-stop: setup  ## stop local services
	$(BIN)/touchpoint services stop

clean:  ## stop services and delete local data (.touchpoint, test state)
	-bash deploy/local/services.sh stop
	rm -rf .touchpoint .touchpoint-test test-artifacts

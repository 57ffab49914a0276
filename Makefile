# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := plugins/dkron-nats-tcpcheck

.PHONY: run test lint format bench bench-quick chaos fuzz clean

$(STAMP): pyproject.toml $(PLUGINS)/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]" -e $(PLUGINS)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dkron-nats agent --server $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dkron_nats tests bench plugins
	$(BIN)/ruff format --check dkron_nats tests bench plugins
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format dkron_nats tests bench plugins
	$(BIN)/ruff check --fix dkron_nats tests bench plugins

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.lateness

bench-quick: $(STAMP)
	$(BIN)/python -m bench.lateness --quick

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --kills 20

fuzz: $(STAMP)
	$(BIN)/python -m bench.fuzz --examples 300

clean:
	rm -rf $(VENV) dkron.data .mypy_cache .ruff_cache .pytest_cache

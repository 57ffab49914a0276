# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := plugins/dkron-nats-tcpcheck plugins/dkron-nats-noop
UI_BUILT := dkron_nats/ui_dist/index.html
UI_DEPS := ui/node_modules/.installed
UI_SOURCES := $(shell find ui/src -type f 2>/dev/null) ui/index.html ui/build.mjs ui/tsconfig.json

.PHONY: run test lint format ui wheel bench bench-quick chaos fuzz clean

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]" $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

# The web UI: npm installs the locked dependencies once, then esbuild bundles ui/ into dkron_nats/ui_dist/.
$(UI_DEPS): ui/package.json ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	touch $(UI_DEPS)

$(UI_BUILT): $(UI_DEPS) $(UI_SOURCES)
	cd ui && npm run --silent build

ui: $(UI_BUILT)

# The wheel pip users install: the package with the built UI inside (dist/).
wheel: $(STAMP) $(UI_BUILT)
	$(BIN)/python -m pip wheel -q --no-deps -w dist .

run: $(STAMP) $(UI_BUILT)
	$(BIN)/dkron-nats agent --server $(ARGS)

lint: $(STAMP) $(UI_DEPS)
	$(BIN)/ruff check dkron_nats tests bench plugins
	$(BIN)/ruff format --check dkron_nats tests bench plugins
	$(BIN)/mypy
	cd ui && npm run --silent typecheck

format: $(STAMP)
	$(BIN)/ruff format dkron_nats tests bench plugins
	$(BIN)/ruff check --fix dkron_nats tests bench plugins

# Three pytest workers: most tests wait on real processes, so three share two cores well (about 2.5x faster).
TEST_WORKERS ?= 3

test: lint $(UI_BUILT)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=30 $(PYTEST_ARGS)

# Every benchmark in one run (about 90 minutes; results in bench/results, plots in docs/benchmarks).
bench: $(STAMP)
	$(BIN)/python -m bench.run

# The same parts at CI sizes, in under 10 minutes.
bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --kills 20

fuzz: $(STAMP)
	$(BIN)/python -m bench.fuzz --examples 300

clean:
	rm -rf $(VENV) dkron.data .mypy_cache .ruff_cache .pytest_cache ui/node_modules dkron_nats/ui_dist

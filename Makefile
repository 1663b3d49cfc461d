# One command runs it, one tests it; both set themselves up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CODE   := src tests $(wildcard bench)

.PHONY: run test lint typecheck unit bench bench-medians chaos scale rollback clean lock

# Exactly the locked versions (hashes checked), then cloudstate itself without dependencies.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Refresh the locks on purpose: the newest releases within pyproject.toml's ranges (a few
# minutes). requirements.lock: what the package needs (the Containerfile installs it);
# requirements-dev.lock: that and the dev extra (make, CI); requirements-libvirt.lock: the
# libvirt extra, which CI adds.
PIP_TOOLS := $(VENV)/tools/pip-tools
COMPILE   := CUSTOM_COMPILE_COMMAND="make lock" $(PIP_TOOLS)/bin/pip-compile --quiet --upgrade \
	--generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock:
	$(PYTHON) -m venv $(PIP_TOOLS)
	$(PIP_TOOLS)/bin/pip install --quiet --disable-pip-version-check pip-tools==7.6.2
	$(COMPILE) -o requirements.lock pyproject.toml
	$(COMPILE) --extra dev -o requirements-dev.lock pyproject.toml
	$(COMPILE) -o requirements-libvirt.lock requirements-libvirt.in

run: $(STAMP)
	$(BIN)/cloudstate serve

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Every benchmark three times, then the median of each figure (as docs/BENCHMARKS.md gives them).
BENCH_RUNS ?= 3
BENCH_JSON ?= .bench-results.jsonl
bench-medians: $(STAMP)
	@rm -f $(BENCH_JSON)
	@for n in $$(seq $(BENCH_RUNS)); do for b in bench/bench_*.py; do \
		echo "== run $$n: $$b"; $(BIN)/python $$b --json $(BENCH_JSON) || exit 1; done; done
	$(BIN)/python bench/_median.py $(BENCH_JSON)

# The long fault run: 2,000 instances, 200 worker kills (make test runs a short version).
chaos: $(STAMP)
	CLOUDSTATE_CHAOS_INSTANCES=2000 CLOUDSTATE_CHAOS_KILLS=200 \
		$(BIN)/pytest -s -p no:cacheprovider tests/e2e/test_chaos.py

# The full multi-process run: 2,000 instances, 3 workers, 2 APIs (make test runs 200).
scale: $(STAMP)
	CLOUDSTATE_MP_INSTANCES=2000 $(BIN)/pytest -s -p no:cacheprovider tests/e2e/test_multiprocess.py

# The rollback that must leave nothing running, 50 times in a row (make test runs 3).
rollback: $(STAMP)
	CLOUDSTATE_ROLLBACK_RUNS=50 $(BIN)/pytest -s -p no:cacheprovider tests/e2e/test_rollback_truth.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info

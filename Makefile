# The two commands a new machine needs: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ADP := $(BIN)/adplatform
STAMP := $(VENV)/.installed-stamp
# `make test`'s pytest-xdist workers (0: one process, the suite in order)
TEST_WORKERS ?= 2

.PHONY: setup native native-clean stack-up stack-down stack-status demo demo-live demo-down test test-cluster test-unit lint format bench bench-http loadtest chaos clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,archive,loadtest,granian]'
	@touch $(STAMP)

# The compiled hot path (adplatform/native.py): rebuilt when any source it is built from changes.
NATIVE := build/native.json
NATIVE_SRC := $(shell find adplatform adserver budget index -name '*.py' 2>/dev/null)

$(NATIVE): $(STAMP) $(NATIVE_SRC)
	$(ADP) native build

## setup: virtualenv with pinned deps, the hot path compiled, system services installed, Kafka/Spark jars fetched
setup: $(STAMP) $(NATIVE)
	$(ADP) stack fetch

## native: compile the serving hot path with mypyc (done by setup; nothing to do when current)
native: $(NATIVE)

## native-clean: remove the compiled hot path (everything then runs in pure Python)
native-clean:
	@if [ -x $(ADP) ]; then $(ADP) native clean; fi

stack-up: setup
	$(ADP) stack up

stack-down:
	@if [ -x $(ADP) ]; then $(ADP) stack down; fi

stack-status:
	$(ADP) stack status

## demo: the whole pipeline end to end on the local stack, with a summary
demo: stack-up
	$(BIN)/python -m loadtest.demo

## demo-live: the platform and its dashboard (http://127.0.0.1:8100/dashboard/) with simulated users until Ctrl-C
demo-live: stack-up
	$(BIN)/python -m loadtest.demo --live

demo-down:
	$(BIN)/python -m loadtest.demo --down

## test: the whole suite on the real local stack (started here): on $(TEST_WORKERS) pytest-xdist workers, then
## the tests marked `exclusive` (they need the stack to themselves) alone
test: stack-up
	status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not exclusive" || status=$$?; \
	$(BIN)/pytest -m exclusive || status=$$?; \
	exit $$status

## test-cluster: the whole suite on the cluster stack, its cluster tests included (both stacks started
## here; the cluster shares the local stack's PostgreSQL)
test-cluster: stack-up
	$(ADP) stack up --topology cluster
	ADP_TEST_TOPOLOGY=cluster $(BIN)/pytest

test-unit: setup
	$(BIN)/pytest -m "not postgres and not redis and not kafka and not spark"

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: pytest-benchmark suites (ratios against references measured in the same run)
bench: stack-up
	$(BIN)/python -m bench.run

bench-http: stack-up
	$(BIN)/python -m bench.http

loadtest: stack-up
	$(BIN)/python -m loadtest.run

clean: stack-down native-clean
	rm -rf .stack $(VENV) build

## chaos: every fault scenario under load on the real stack, then the table of invariants;
## `make chaos TOPOLOGY=cluster`: the cluster stack's scenarios (leader broker, Redis master, Spark worker,
## ad-server host killed), the cluster stack started here
TOPOLOGY ?= single
chaos: stack-up
	@if [ "$(TOPOLOGY)" = cluster ]; then $(ADP) stack up --topology cluster; fi
	$(BIN)/python -m loadtest.chaos --topology $(TOPOLOGY)

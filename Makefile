# Developer and CI entry points. `make help` lists the targets.
#
# Local services bind fixed loopback ports; override them for every target at
# once, e.g. `make test KAFKA_PORT=19092 REDIS_PORT=16390`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means redo.
VENV_STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

export KAFKA_PORT ?= 9092
export REDIS_PORT ?= 6390
export REGISTRY_PORT ?= 8081
export KAFKA_BOOTSTRAP ?= 127.0.0.1:$(KAFKA_PORT)
export REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)/0
export SCHEMA_REGISTRY_URL ?= http://127.0.0.1:$(REGISTRY_PORT)/apis/ccompat/v7

SERVICES := deploy/local/services.sh

.PHONY: help venv services-up services-down services-status lint format test clean \
	demo demo-reset bench redis-cluster-up redis-cluster-down

demo: venv services-up ## Run the whole path on the shared data sets, print the funnel
	deploy/local/demo.sh

bench: venv services-up ## Measure throughput, latency, memory (BENCH_ARGS="--events 100000")
	$(BIN)/python -m bench.run $(BENCH_ARGS)

redis-cluster-up: ## Start a three-node Redis Cluster on 127.0.0.1:7101-7103
	deploy/local/redis-cluster.sh start

redis-cluster-down: ## Stop the local Redis Cluster
	deploy/local/redis-cluster.sh stop

demo-reset: venv ## Delete the demo's topics, Redis keys and sandbox
	deploy/local/demo-reset.sh

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / \
		{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV_STAMP) ## Create .venv and install the package with its dev extras

$(VENV_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

services-up: ## Start Kafka, Redis and the schema registry on loopback
	$(SERVICES) up

services-down: ## Stop the local services (and the Crisp sandbox) of this checkout
	deploy/local/sandbox.sh stop
	$(SERVICES) down

services-status: ## Say which local services are up
	$(SERVICES) status

lint: venv ## Check lint, formatting and types (ruff, mypy on consumer/)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy consumer

format: venv ## Rewrite the code with ruff's fixes and formatter
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: venv services-up ## Run the tests against the local services (PYTEST_ARGS=...)
	$(BIN)/pytest $(PYTEST_ARGS)

clean: services-down redis-cluster-down ## Stop everything; remove .venv, downloads, data
	rm -rf $(VENV) .cache .run .mypy_cache .ruff_cache .pytest_cache .hypothesis \
		*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

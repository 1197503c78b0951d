# arbitrage — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3.11
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: help install bytecode system-deps bench-deps run test lint fmt bench dist clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## create .venv with the locked dependencies and the `arbitrage` command (installs uv if missing)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

system-deps: ## install what the tests start or drive when missing: redis-server, chromium (Debian, as root)
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || echo "warning: could not install$$missing; the tests that need them will be skipped"; \
	fi

bench-deps: ## install wrk (load generator of benchmarks/query.py) when missing
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)

run: install ## serve on 127.0.0.1:8080 with the embedded warehouse and the demo feed on
	$(BIN)/arbitrage serve --demo

# Tests and benchmarks start many Python processes (servers, CLI runs, workers). Where
# PYTHONDONTWRITEBYTECODE is set (CI machines often do) no .pyc is ever written, and each of
# them compiled every module it imported: e2e/test_server.py and integration/test_cli.py took
# 289 s instead of 136. So uv compiles the dependencies when it installs them (once), and the
# project's own modules are compiled here.
bytecode: export UV_COMPILE_BYTECODE := 1
bytecode: install
	@$(BIN)/python -m compileall -q arbitrage tests benchmarks > /dev/null

test: bytecode system-deps ## run the whole test suite (starts and stops Redis, a Kafka-protocol broker, an S3 endpoint)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check arbitrage tests benchmarks
	$(BIN)/ruff format --check arbitrage tests benchmarks
	$(BIN)/mypy arbitrage

fmt: install ## format the code and apply safe lint fixes
	$(BIN)/ruff format arbitrage tests benchmarks
	$(BIN)/ruff check --fix arbitrage tests benchmarks

bench: bytecode bench-deps ## run the benchmarks (minutes; prints tables)
	@for script in benchmarks/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

dist: ## build dist/arbitrage: one file that runs `./arbitrage serve` on a box with only Python 3.11
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	UV="$(UV)" python3.11 deploy/dist/build.py --out dist/arbitrage

clean: ## remove the virtualenv, caches and local data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data exports dist

# infergate: every command sets up what it needs first (virtual environment,
# system packages, demo models), so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8001
REPOSITORY ?= models/repository
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: help install system-deps node-deps proto models run test lint bench clean

help:
	@echo "make run     set up, build the demo models, serve them on $(HOST):$(PORT)"
	@echo "make test    set up, run the test suite"
	@echo "make lint    ruff + mypy --strict"
	@echo "make bench   load benchmarks (perf_analyzer); results in bench/results/"
	@echo "make proto   regenerate infergate/protocol from proto/*.proto"
	@echo "make models  build the demo models into $(REPOSITORY)"

install: $(STAMP) system-deps node-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# `server`: the gateway (the base install is the client library alone).
	# `convert` (tensorflow) rebuilds the committed .tflite demo files; the tests
	# check that it still reproduces them. Serving needs LiteRT only. `optimize`
	# (onnx tools, NNCF, matplotlib) builds and profiles variants.
	$(BIN)/python -m pip install --quiet -e '.[server,dev,convert,optimize]'
	touch $(STAMP)

# perf_analyzer (shipped in tritonclient's wheel) links against libb64; the scale-out
# tests run a real redis-server and HAProxy; bench.instructions counts with valgrind.
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libb64.so.0d' || missing="$$missing libb64-0d"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v valgrind >/dev/null || missing="$$missing valgrind"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

# The Node.js client's packages, exactly as its lockfile says; its test runs in `make test`.
NODE_MODULES := clients/node/node_modules/.package-lock.json
node-deps: $(NODE_MODULES)

$(NODE_MODULES): clients/node/package.json clients/node/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ (the Node.js client's test needs it)"; exit 1; }
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

proto: $(STAMP)
	$(BIN)/python proto/generate.py

models: $(STAMP)
	$(BIN)/python models/make_demo_models.py --repository $(REPOSITORY)

run: install models
	$(BIN)/infergate serve --model-repository $(REPOSITORY) --host $(HOST) --port $(PORT)

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The hardening suite's long forms (generated malformed calls, minutes of mixed
# traffic) run here; `make test` runs their short forms.
FUZZ_EXAMPLES_LONG ?= 5000
SOAK_SECONDS_LONG ?= 300

bench: install models
	$(BIN)/python -m bench.run --repository $(REPOSITORY)
	mkdir -p bench/results
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES_LONG) FUZZ_REPORT=bench/results/fuzz.json \
	SOAK_SECONDS=$(SOAK_SECONDS_LONG) SOAK_REPORT=bench/results/soak.json \
	$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/hardening -k "fuzz or soak"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

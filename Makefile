# Two commands for a new user (see README):
#   make run    create .venv, install the locked dependencies, run the pipeline
#   make test   install the development dependencies too, run the test suite
#   make serve  a local Prefect server (http://127.0.0.1:4200) serving the pipeline's deployments
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
# Stages run `python` and `dvc` from PATH: make them the venv's.
RUN    := PATH="$(BIN):$$PATH"

.PHONY: run test test-fast lint bench serve serve-model watch lock clean-outputs

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Serving and ONNX export need the `serve` extra (Ray Serve, onnx, onnxruntime); `make test` has it too.
$(VENV)/.installed-serve: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[serve]'
	touch $@

run: $(VENV)/.installed
	$(RUN) $(BIN)/python -m pipelines.orchestration.flow $(ARGS)

# The linter and formatter check run first: a style slip fails CI like a failing test.
# Two pytest-xdist workers, a test module per unit of work (tests/conftest.py: its scheduler): the slow tests wait on
# subprocesses (Ray, Prefect, DVC) for much of their time, so two at once fill this 2-core machine.
XDIST := -n 2 --no-loadscope-reorder

test: lint
	$(RUN) $(BIN)/python -m pytest $(XDIST) $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: $(VENV)/.installed-dev
	$(RUN) $(BIN)/python -m pytest $(XDIST) -m "not slow" $(ARGS)

# make bench [ARGS="--rows 100000"]   the framework-overhead benchmark (bench/fnn.py)
# make bench ARGS=pipeline             where a default `make run` spends its time (bench/pipeline.py)
# make bench ARGS=serve                the model server under concurrent clients (bench/serve.py)
# make bench ARGS=stream               prepare and train through Ray Data at growing sizes (bench/stream.py;
#                                      ARGS="stream --only images": prepare of PNG folders)
BENCH_NAMED := pipeline serve stream
bench: $(VENV)/.installed $(if $(filter serve,$(firstword $(ARGS))),$(VENV)/.installed-serve)
	$(RUN) $(BIN)/python -m $(if $(filter $(BENCH_NAMED),$(firstword $(ARGS))),bench.$(firstword $(ARGS)) $(wordlist 2,99,$(ARGS)),bench.fnn $(ARGS))

# make serve-model ARGS="NAME[:VERSION|:ALIAS] ... [--port 8000] [--replicas 1]"   (docs/serving.md)
serve-model: $(VENV)/.installed-serve
	$(RUN) $(BIN)/python -m pipelines.serving $(ARGS)

serve: $(VENV)/.installed
	$(RUN) $(BIN)/python -m pipelines.orchestration.serve $(ARGS)

watch: $(VENV)/.installed
	$(RUN) $(BIN)/python -m pipelines.orchestration.watch $(ARGS)

# A fresh resolve of pyproject.toml in a scratch venv (not .venv, which may hold packages nothing
# requires any more), frozen under constraints.txt's header comments.
lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip; \
	"$$tmp/venv/bin/pip" install --quiet --disable-pip-version-check -e '.[dev]'; \
	{ grep '^#' constraints.txt; \
	  "$$tmp/venv/bin/pip" freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

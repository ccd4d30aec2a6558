# One target per habit. Each installs what it needs first (scripts/bootstrap.sh).
VENV ?= .venv
export VENV
BIN := $(VENV)/bin
STAMP := $(VENV)/.readscale-installed
DEMO_STAMP := $(VENV)/.readscale-demo-installed
DOCS_STAMP := $(VENV)/.readscale-docs-installed
PYTEST_ARGS ?=

.PHONY: demo smoke test lint format unasync bench compiled docs setup clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh

# The demo installs only what it needs (no browser, no test tools): a newcomer's first
# command should not wait for them.
$(DEMO_STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh --demo

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

setup: $(STAMP)

## The main job: the whole read path under load, and what each layer absorbed.
demo: $(DEMO_STAMP)
	$(BIN)/readscale demo

## A quick look at the local stack: start every server, write and read back, stop.
smoke: setup
	$(BIN)/readscale stack up --cluster --memcached --varnish
	$(BIN)/readscale stack smoke || ($(BIN)/readscale stack down; exit 1)
	$(BIN)/readscale stack down

## The test suite, against real servers the tests start themselves.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Lint includes the documentation site: a broken link or a mkdocs warning fails it.
lint: setup $(DOCS_STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy
	$(BIN)/python scripts/check_layers.py
	$(BIN)/python scripts/unasync.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

format: setup
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts
	$(BIN)/python scripts/unasync.py

unasync: setup
	$(BIN)/python scripts/unasync.py

bench: setup
	$(BIN)/readscale bench stack

## A compiled wheel (mypyc, docs/development.md) in build/whl, unpacked into build/compiled:
## `PYTHONPATH=build/compiled readscale ...` runs it without touching the venv.
compiled: setup
	rm -rf build/whl build/compiled
	READSCALE_COMPILE=1 $(BIN)/python -m pip wheel . --no-deps -w build/whl
	mkdir -p build/compiled && cd build/compiled && unzip -q ../whl/readscale-*.whl
	PYTHONPATH=build/compiled $(BIN)/readscale --version

## The documentation site from docs/ and the docstrings, into site/ (a warning fails it).
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	-$(BIN)/readscale stack down 2>/dev/null
	rm -rf $(VENV) .readscale .mypy_cache .ruff_cache site

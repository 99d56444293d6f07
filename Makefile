# Raydeck: `make run` starts the embedded default, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml agent/pyproject.toml cli/pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: run test lint install clean

$(STAMP): pyproject.toml $(wildcard agent/pyproject.toml) $(wildcard cli/pyproject.toml)
	$(PYTHON) -c 'import sys; sys.exit("Raydeck needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./agent -e ./cli
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Bytecode written once, even where PYTHONDONTWRITEBYTECODE is set: every process would
# otherwise compile Raydeck's own modules again at each start (a fifth of a cold start).
COMPILE := $(BIN)/python -m compileall -q -j0 accounts clouds clusters console kit workloads

run: $(STAMP)
	$(COMPILE)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py serve

# The tests in two parts, then the quick benchmarks (benchmarks/all.py): a change that
# makes a figure twice as bad as its goal fails here the day it lands. First the tests
# that may share the machine, on both cores (pytest-xdist, a file per worker at a time so
# module fixtures are built once); then, one at a time, those that must run alone: real
# Ray, a browser, or marked `serial`. The two selections are complements: every test once.
ALONE := ray or browser or serial
test: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not ($(ALONE))"
	$(BIN)/python -m pytest -m "$(ALONE)"
	$(BIN)/python benchmarks/all.py --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy kit accounts console clouds clusters workloads cli/raydeck agent/raydeck_agent

clean:
	rm -rf $(VENV) var

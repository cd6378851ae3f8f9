# The front door: every target builds .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/connector demo

test: lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check connector tests bench
	$(BIN)/ruff format --check connector tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/import_bench.py

.PHONY: bench-postgres bench-replicas bench-feed

bench-postgres: $(STAMP)
	$(BIN)/python bench/postgres_bench.py

bench-replicas: $(STAMP)
	$(BIN)/python bench/replicas_bench.py

bench-feed: $(STAMP)
	$(BIN)/python bench/feed_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

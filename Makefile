# The front door: every target builds .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean lock

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/connector demo

# Every test, then the package's branch coverage (files fully covered left out); the
# report is printed whether or not the tests pass, and their status is make's.
test: lint
	$(BIN)/coverage run -m pytest -q; status=$$?; $(BIN)/coverage report; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check connector tests bench
	$(BIN)/ruff format --check connector tests bench
	$(BIN)/mypy

# `make bench BENCH_ARGS="--shapes contacts --rows 200000"` runs a part of it.
bench: $(STAMP)
	$(BIN)/python bench/import_bench.py $(BENCH_ARGS)

.PHONY: bench-postgres bench-replicas bench-feed

bench-postgres: $(STAMP)
	$(BIN)/python bench/postgres_bench.py

bench-replicas: $(STAMP)
	$(BIN)/python bench/replicas_bench.py

bench-feed: $(STAMP)
	$(BIN)/python bench/feed_bench.py

# The image's locks (see requirements.lock's header). uv, at a fixed version, runs from a
# throwaway venv; it resolves from PyPI for the image's Python and glibc, once for each of
# the image's architectures, and the two must agree.
UV_VERSION := 0.13.9
LOCK_FOR := --no-config --python-version 3.11 --generate-hashes --no-header --quiet \
	--index-url https://pypi.org/simple
define LOCK_HEADER
# Every runtime dependency of connector (pyproject.toml's [project] dependencies, and
# theirs), pinned with the hashes of their files on PyPI, for CPython 3.11 on Linux x86_64
# and aarch64 (glibc 2.36: the image's Debian bookworm). The Dockerfile installs it with
# pip install --require-hashes --no-deps, so an altered or substituted file fails the build.
# requirements-build.lock pins the same way what builds connector itself: setuptools, as
# pyproject.toml's [build-system] asks.
#
# Made by `make lock` (uv pip compile, uv $(UV_VERSION)); never edited by hand. To update
# (a dependency added or bumped in pyproject.toml, or a security fix released): run
# `make lock`, review the diff, build the image and run its tests.
endef
define BUILD_LOCK_HEADER
# setuptools, pinned with its hashes, to build connector itself in the image without
# fetching an unpinned build tool. Made with requirements.lock by `make lock`; see its
# header.
endef
export LOCK_HEADER BUILD_LOCK_HEADER

lock:
	@tool=$$(mktemp -d) && trap 'rm -rf "$$tool"' EXIT && \
	$(PYTHON) -m venv "$$tool/venv" && \
	"$$tool/venv/bin/pip" install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)' && \
	"$$tool/venv/bin/python" -c 'import tomllib; print(*(r for r in tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"] if r.startswith("setuptools")), sep="\n")' > "$$tool/build.in" && \
	for arch in x86_64 aarch64; do \
		"$$tool/venv/bin/uv" pip compile pyproject.toml $(LOCK_FOR) \
			--python-platform $$arch-manylinux_2_36 -o "$$tool/$$arch.txt" && \
		"$$tool/venv/bin/uv" pip compile "$$tool/build.in" $(LOCK_FOR) --no-annotate \
			--python-platform $$arch-manylinux_2_36 -o "$$tool/$$arch-build.txt" || exit 1; \
	done && \
	cmp "$$tool/x86_64.txt" "$$tool/aarch64.txt" && \
	cmp "$$tool/x86_64-build.txt" "$$tool/aarch64-build.txt" && \
	{ printf '%s\n' "$$LOCK_HEADER"; cat "$$tool/x86_64.txt"; } > requirements.lock && \
	{ printf '%s\n' "$$BUILD_LOCK_HEADER"; cat "$$tool/x86_64-build.txt"; } > requirements-build.lock && \
	echo "requirements.lock: $$(grep -c '^[a-z0-9]' requirements.lock) packages pinned"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

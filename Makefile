# The two commands of the README. Each creates (or refreshes, when pyproject.toml changed) the
# virtual environment .venv itself, offline apart from the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: book book-force test env clean benchmarks

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# exact torch/torchvision versions in constraints.txt; the package declares ranges
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

env: $(STAMP)

## Build the book (executes changed chapters, warnings are errors) into _build/html
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

## Re-execute every chapter, then build (release builds)
book-force: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going --all

## Unit tests, every notebook in a fresh kernel (nbval), then the book build from those runs
test: $(STAMP)
	$(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 -p no:cacheprovider --durations=15

benchmarks: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean:
	rm -rf _build .jupyter_cache

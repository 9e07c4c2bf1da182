# The two commands of the README. Each creates (or refreshes, when pyproject.toml changed) the
# virtual environment .venv itself, offline apart from the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: book book-force test check-book env vendor clean benchmarks

# MathJax 3 and the ipywidgets HTML manager, served from the built site so that the book reads
# offline (_config.yml: mathjax_path, nb_ipywidgets_js). Fetched once from the npm registry.
VENDOR := _build/vendor
MATHJAX_VERSION := 3.2.2
WIDGETS_VERSION := 1.0.15

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# exact torch/torchvision versions in constraints.txt; the package declares ranges
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

env: $(STAMP)

$(VENDOR)/.stamp: Makefile
	rm -rf $(VENDOR) _build/npm
	npm install --silent --no-audit --no-fund --prefix _build/npm \
	  mathjax@$(MATHJAX_VERSION) @jupyter-widgets/html-manager@$(WIDGETS_VERSION)
	mkdir -p $(VENDOR)/mathjax $(VENDOR)/html-manager
	cd _build/npm/node_modules/mathjax/es5 && cp -r tex-mml-chtml.js input output ui a11y \
	  adaptors sre $(CURDIR)/$(VENDOR)/mathjax/ && rm -rf $(CURDIR)/$(VENDOR)/mathjax/output/svg
	cd _build/npm/node_modules/@jupyter-widgets/html-manager/dist && \
	  cp embed.js embed.js.LICENSE.txt *.woff *.woff2 *.ttf *.eot *.svg \
	  $(CURDIR)/$(VENDOR)/html-manager/
	cp _build/npm/node_modules/mathjax/LICENSE $(VENDOR)/mathjax/
	rm -rf _build/npm
	touch $@

vendor: $(VENDOR)/.stamp

## Build the book (executes changed chapters, warnings are errors) into _build/html. The chapters
## missing from the execution cache run first, two kernels at a time where the machine has the
## cores and memory (tools/execute_book.py; DEEPINSIDE_BOOK_JOBS=1: one at a time, in the build)
book: $(STAMP) $(VENDOR)/.stamp
	$(BIN)/python tools/execute_book.py
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

## Re-execute every chapter, then build (release builds): the execution cache is emptied first,
## so every chapter runs again whatever the cache held
book-force: $(STAMP) $(VENDOR)/.stamp
	rm -rf .jupyter_cache _build/jupyter_execute
	$(BIN)/python tools/execute_book.py
	$(BIN)/jupyter-book build . -W -n --keep-going --all
	@echo "book: $(CURDIR)/_build/html/index.html"

## Open every page of _build/html in headless Chromium, network cut off (after make book)
check-book: $(STAMP)
	DEEPINSIDE_HTML=$(CURDIR)/_build/html $(BIN)/python -m pytest tests/test_browser.py \
	  -p no:cacheprovider -v

## Unit tests, every notebook in a fresh kernel (nbval), the book build from those runs, then
## every built page in headless Chromium (tests/test_browser.py)
test: $(STAMP) $(VENDOR)/.stamp
	$(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 -p no:cacheprovider --durations=15

benchmarks: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean:
	rm -rf _build .jupyter_cache

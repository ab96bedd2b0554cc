# Two entry points: `make serve` (set up + run the server on the bundled model) and
# `make test` (set up + run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch lies on this machine's disk; an unpinned torch pulls a CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,ray
HOST ?= 127.0.0.1
PORT ?= 3000
BIN := $(VENV)/bin
export BENTOML_DO_NOT_TRACK := true
export BENTOML_HOME ?= $(CURDIR)/.bentoml

.PHONY: setup browser serve test bench clean

setup: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

serve: setup
	$(BIN)/bentoml serve --host $(HOST) --port $(PORT)

# Debian's Chromium + the playwright package for the playground's browser test. Outside CI a
# failure here (no root, no apt) only makes that one test skip; in CI it is an error.
browser: setup
	$(if $(CI),,-)PYTHON=$(BIN)/python scripts/install-browser.sh

test: setup browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .bentoml .pytest_cache

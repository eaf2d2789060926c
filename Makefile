# Set-up and everyday commands.  Only needs python3 and a C compiler.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
EXT_SRC := $(wildcard ext/*.pyx ext/*.h ext/*.c)

.PHONY: all venv build test demo bench bench-scale lint clean drill

all: build

$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel "cython>=3.0"
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $@

venv: $(STAMP)

# build_ext --inplace is a no-op when nothing changed; a compiler error stops make.
build: $(STAMP)
	$(PYTHON) setup.py -q build_ext --inplace

# ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and mypy, configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check replicator tests benchmarks scripts
	$(BIN)/mypy

test: build lint
	$(PYTHON) -m pytest -q -n 2 --benchmark-skip tests
	BENCH_QUICK=1 $(PYTHON) -m pytest -q --benchmark-only --benchmark-min-rounds=1 --benchmark-max-time=0.5 benchmarks

demo: build
	$(PYTHON) scripts/demo.py

# The failover runbook end to end on this machine (docs/OPERATIONS.md "Failover and failback"): prints RPO and RTO.
drill: build
	$(PYTHON) scripts/drill.py

bench: build
	mkdir -p bench-out
	$(PYTHON) -m pytest --benchmark-only --benchmark-json=bench-out/bench.json --ignore=benchmarks/bench_scale.py benchmarks
	$(PYTHON) scripts/bench_report.py --readme README.md bench-out/bench.json > bench-out/bench.md
	cat bench-out/bench.md

# Issue 12's scale runs (benchmarks/bench_scale.py; hours, tens of GB of disk at full size):
# BENCH_SCALE_FILES (10^6), BENCH_SCALE_SOURCES (500), BENCH_SCALE_PARALLEL (4) change the sizes.
bench-scale: build
	mkdir -p bench-out
	$(PYTHON) -m pytest -s --benchmark-only --benchmark-json=bench-out/bench-scale.json benchmarks/bench_scale.py
	$(PYTHON) scripts/bench_report.py bench-out/bench-scale.json > bench-out/bench-scale.md
	cat bench-out/bench-scale.md

# Offline installation (docs/OPERATIONS.md "Installing"): dist/replicator-*.whl with the compiled extension, man
# page and completions, and dist/wheelhouse/ with it and every runtime dependency as a binary wheel for this
# Python.  Needs the package index once, for the dependencies.  Then: pip install --no-index --find-links
# dist/wheelhouse replicator
.PHONY: wheel man completion
wheel: $(STAMP)
	$(PYTHON) scripts/build_wheelhouse.py

# Generated from the live argument parser into build/share/ (installed by the wheel under PREFIX/share).
man: $(STAMP)
	$(PYTHON) scripts/gen_share.py --only man

completion: $(STAMP)
	$(PYTHON) scripts/gen_share.py --only completion

clean:
	rm -rf build $(VENV) replicator/_ext/*.so ext/*.c demo-out bench-out

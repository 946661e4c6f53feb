# One entry point.  'make run' installs everything and runs the main job on its small
# default; 'make test' installs (if needed) and runs the test suite.  CI calls 'make test'.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.cffdyn-installed
FMNIST  := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: install data run test test-slow bench clean help

help:
	@echo "make run        install (venv, torch CPU, package, Fashion-MNIST) and build the quick paper"
	@echo "make test       install if needed and run the fast test suite"
	@echo "make test-slow  the slow tests too"
	@echo "make bench      print the speed benchmarks (ratios measured side by side)"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: this machine kind has a local CPU build; a bare 'torch' would pull CUDA wheels
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) data

# Fashion-MNIST from Debian's package (real IDX files, no download at run time).
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST)/train-images-idx3-ubyte ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST runs will fall back or skip"; \
	else echo "note: Fashion-MNIST not at $(FMNIST) (apt-get install dataset-fashion-mnist, or set CFFDYN_FMNIST)"; fi

run: install
	$(BIN)/cffdyn paper build --quick

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m theory bench
	$(BIN)/python -m sim bench
	$(BIN)/python -m vit bench

clean:
	rm -rf $(VENV) results build *.egg-info

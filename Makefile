# One entry point.  'make run' installs everything and runs the main job on its small
# default; 'make test' installs (if needed) and runs the test suite.  CI calls 'make test',
# which needs neither TeX nor pandoc (the tests that render skip without them).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.cffdyn-installed
FMNIST  := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=
# what 'cffdyn paper build' renders with: PDF (pdflatex + bibtex via latexmk, natbib, lmodern) and HTML (pandoc)
PAPER_DEBS := texlive-latex-base texlive-latex-recommended latexmk lmodern pandoc

.PHONY: install data paper-tools run test test-slow bench gpu-check clean help

help:
	@echo "make run        install (venv, torch CPU, package, Fashion-MNIST, TeX + pandoc) and build the quick paper"
	@echo "make test       install if needed and run the fast test suite"
	@echo "make test-slow  the slow tests too"
	@echo "make bench      print the speed benchmarks (ratios measured side by side)"
	@echo "make gpu-check  on a CUDA machine: CUDA tests, bench, a full-scale noise-dose arm; writes recorded/gpu/"

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

# TeX and pandoc from Debian's packages, only for the paper (make test does not need them).
paper-tools:
	@if command -v pdflatex >/dev/null 2>&1 && command -v bibtex >/dev/null 2>&1 && command -v latexmk >/dev/null 2>&1 \
	   && command -v pandoc >/dev/null 2>&1 && kpsewhich lmodern.sty natbib.sty booktabs.sty >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(PAPER_DEBS) (apt-get; a few minutes the first time)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  (apt-get install -y -qq --no-install-recommends $(PAPER_DEBS) >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $(PAPER_DEBS) >/dev/null 2>&1)) || \
	  echo "warning: could not install $(PAPER_DEBS); the paper build writes what the installed tools allow"; \
	else echo "note: no PDF/HTML tools and no root apt-get: install $(PAPER_DEBS) to get manuscript.pdf and .html"; fi

run: install paper-tools
	$(BIN)/cffdyn paper build --quick

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m theory bench
	$(BIN)/python -m sim bench
	$(BIN)/python -m vit bench

# On a lent GPU image (its own torch, no venv): the system python with the checkout on PYTHONPATH,
# Fashion-MNIST copied into data/fashion-mnist (git-ignored) or given by CFFDYN_FMNIST.  8 minutes.
GPU_PY ?= python3
GPU_BUDGET ?= 480
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m vit.gpu_check --budget $(GPU_BUDGET)

clean:
	rm -rf $(VENV) results build *.egg-info

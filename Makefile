# lifelong: the two commands of the README.
#   make repro   set up .venv (if needed), run the whole pipeline (dvc repro), regenerate the README's results
#                section and reports/index.md from what it produced
#   make test    set up .venv (if needed) and run the test suite
# Everything runs offline: nothing is fetched from a model or dataset hub.

SHELL := /bin/bash
VENV  := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export HF_HOME := $(CURDIR)/.cache/hf
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup repro test test-fast bench readme clean-venv

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro
	python -m lifelong.pipeline.readme

test: setup
	pytest -q

readme: setup             # regenerate README.md's results section and reports/index.md (a test checks both)
	python -m lifelong.pipeline.readme

test-fast: setup          # skips the notebook smoke tests and slow integration tests
	pytest -q -m "not notebooks and not slow"

bench: setup
	python benchmarks/bench_ultraedit.py
	python benchmarks/bench_wise.py
	python benchmarks/bench_cost.py

clean-venv:
	rm -rf $(VENV)

# Two entry points, each sets itself up on a fresh clone:
#   make repro   -> create .venv, install, generate the embedded default data if absent, dvc repro
#   make test    -> create .venv, install, run the test suite (make test-fast: without the slow ones;
#                   make lint: ruff check + format check, as CI runs it)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install repro test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on this disk, never a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

repro: install
	@test -d data || $(BIN)/unet-pipeline data synth
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest -q

test-fast: install  # the inner loop: everything but the real repro / torchrun / server / training runs
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf preprocessed checkpoints predictions reports exported

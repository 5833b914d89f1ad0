# Two entry points: `make train` (set up, then run the quickstart job) and `make test` (set up, then test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/quickstart.yaml

.PHONY: setup train test lint bench clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes. The first install downloads the CUDA 13 build of torch (~5 GB).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# One process on whatever this machine has (CPU here); see configs/accelerate/ for GPUs and several machines.
train: $(STAMP)
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		train.py --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

clean:
	rm -rf runs cache .pytest_cache

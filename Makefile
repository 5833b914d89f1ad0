# Two entry points: `make train` (set up, then run the quickstart job) and `make test` (set up, then test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/quickstart.yaml

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup train test lint clean

setup: $(STAMP) $(FMNIST)

# Re-installs only when pyproject.toml changes. The first install downloads the CUDA 13 build of torch (~5 GB).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# Real data for fine-tuning and its tests: Debian's dataset-fashion-mnist (30 MB, installs offline from apt).
$(FMNIST):
	command -v apt-get >/dev/null && { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
		|| echo "could not install dataset-fashion-mnist (needs apt-get as root); fine-tuning tests will say so"

# One process on whatever this machine has (CPU here); see configs/accelerate/ for GPUs and several machines.
train: $(STAMP)
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		train.py --config $(CONFIG)

test: $(STAMP) $(FMNIST)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/python -m ruff check .

clean:
	rm -rf runs cache .pytest_cache

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Two CPU cores in CI: keep torch from oversubscribing them across pytest and subprocesses.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def small_bank():
    """Six categories of 600 points, built once for the whole session (no cache on disk)."""
    from dr_fdsl.bank import build_bank

    return build_bank(num_classes=6, num_points=600, seed=1, cache_dir=None)


@pytest.fixture(scope="session")
def bank_dir(tmp_path_factory):
    """One bank cache folder for every test that trains: each bank is built once per session."""
    return tmp_path_factory.mktemp("banks")

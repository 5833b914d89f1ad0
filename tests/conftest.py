"""Shared fixtures and helpers: tiny runs (4 categories, 32 px, timm's test_vit) and real subprocess launches."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = os.path.dirname(sys.executable)  # the environment's console scripts: accelerate, torchrun
sys.path.insert(0, str(ROOT))  # `tools.*` importable from tests (the package itself is installed)

# Two CPU cores in CI: keep torch from oversubscribing them across pytest and subprocesses. Under pytest-xdist
# (`make test` runs `-n 2`) each of the two workers gets one thread, and so do the processes its tests start
# (OMP_NUM_THREADS, read by torch at import; a test that sets its own keeps it); alone, one process takes both.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
else:
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


def run_processes(args, timeout, env=None):
    """Runs a launcher in its own process group; on a time-out the whole group is killed, leaving no workers."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{args[0]} timed out after {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def tiny(tmp_path, bank_dir, *overrides):
    """The config of a run of a few steps: 4 categories, 32 px, timm's test_vit, batch 8 (checked on load)."""
    from dr_fdsl.config import load_config

    base = [f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}", "bank.num_classes=4",
            "bank.num_points=300", "renderer.image_size=32", "renderer.points_per_pixel=4",
            "renderer.radius_init=0.04", "model.name=test_vit", "model.drop_path=0.0", "train.batch_size=8",
            "train.max_steps=4", "train.log_every=2", "train.eval_every=2", "train.eval_images=16",
            "train.image_every=2", "train.ckpt_every=2", "train.progress=false", "optim.warmup_steps=1"]
    return load_config(None, base + list(overrides))

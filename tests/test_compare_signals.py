"""tools/compare.py: no worker, nor anything a worker started, outlives compare.py (real signals to real
processes), and what compare.py says about its --out folder."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torchvision.io import write_png

from tests.conftest import ROOT

# Stands in for the processes torch and accelerate start inside a worker: every worker (the environment names its
# parent) starts a `sleep` that nothing else would end, and records its pid.
SITECUSTOMIZE = """
import os, subprocess
if os.environ.get("DR_FDSL_COMPARE_PARENT") and os.environ.get("TEST_GRANDCHILDREN"):
    child = subprocess.Popen(["sleep", "300"])
    with open(os.path.join(os.environ["TEST_GRANDCHILDREN"], str(os.getpid())), "w") as f:
        f.write(str(child.pid))
"""


def image_folder(root, classes=("a", "b"), per_class=2, splits=("train", "val")):
    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                write_png(torch.full((3, 8, 8), 60 * c + i, dtype=torch.uint8), str(root / split / name / f"{i}.png"))
    return f"folder:{root}"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child that nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_every_worker_and_its_children_die_with_compare(tmp_path, signum):
    """SIGKILL: the kernel's parent-death signal ends each worker, which ends its process group. Ctrl-C (SIGINT; SIGTERM
    takes the same path, test_sigterm_stops_the_workers_and_exits_143): compare.py stops each worker's group, says
    so in one line and exits 130."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "grandchildren").mkdir()
    env = {**os.environ, "TEST_GRANDCHILDREN": str(tmp_path / "grandchildren"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # Budgets that would keep the workers busy for hours.
    command = [sys.executable, str(ROOT / "tools" / "compare.py"), "--preset", "cpu", "--out", str(tmp_path / "cmp"),
               "--arms", "frozen", "--seeds", "0", "1", "--jobs", "2", "--steps", "100000", "--epochs", "10000",
               "--per-class", "2", "--dataset", image_folder(tmp_path / "data")]
    compare = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    pids = [compare.pid]
    try:
        workers = []
        while len(workers) < 2:  # "seed S: started (pid P, ...)"
            line = compare.stdout.readline()
            assert line, f"compare.py ended before starting its workers: {compare.communicate()[1][-2000:]}"
            if ": started (pid " in line:
                workers.append(int(line.split("(pid ")[1].split(",")[0]))
        pids += workers

        def grandchildren():
            found = {p.name: int(p.read_text() or 0) for p in (tmp_path / "grandchildren").iterdir()}
            return list(found.values()) if len(found) == 2 and all(found.values()) else None

        pids += wait_for(grandchildren, 60, "each worker's child")

        def importing_torch():  # each worker is well into its work: torch's library is loaded
            return all("libtorch" in open(f"/proc/{pid}/maps").read() for pid in workers)

        wait_for(importing_torch, 120, "the workers to load torch")
        assert all(alive(pid) for pid in pids)
        os.kill(compare.pid, signum)
        _, err = compare.communicate(timeout=30)
        wait_for(lambda: not any(alive(pid) for pid in pids), 10,
                 f"every worker and child to end: {[pid for pid in pids if alive(pid)]} still running")
        if signum == signal.SIGKILL:
            assert compare.returncode == -signal.SIGKILL
        else:  # one line, no traceback
            assert compare.returncode == 130, err
            assert err.strip().count("\n") == 0 and err.startswith("interrupted: every worker was stopped")
        logs = "".join(p.read_text() for p in (tmp_path / "cmp" / "seeds").glob("*.log"))
        assert logs.count("compare.py worker: stopped") == 2  # each worker said why, in its log
    finally:
        for pid in pids:  # only what this test started, should the assertions above have failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if compare.poll() is None:
            compare.wait()

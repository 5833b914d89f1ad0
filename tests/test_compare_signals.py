"""tools/compare.py: no worker, nor anything a worker started, outlives compare.py (real signals to real
processes), and what compare.py says about its --out folder."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from tests.conftest import ROOT

# Stands in for the processes torch and accelerate start inside a worker: every worker (compare.py runs each with
# --jobs 1 last) starts a `sleep` that nothing else would end, and records its pid.
SITECUSTOMIZE = """
import os, subprocess, sys
if os.environ.get("TEST_GRANDCHILDREN") and sys.argv[-2:] == ["--jobs", "1"]:
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


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            pass
    return found


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
        def two_workers():
            assert compare.poll() is None, f"compare.py ended: {compare.communicate()[1][-2000:]}"
            found = children(compare.pid)
            return found if len(found) == 2 else None

        workers = wait_for(two_workers, 60, "compare.py to start two workers")
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
        # 30 s: a worker's Python handler runs only between bytecodes, and a loaded 2-core machine can hold one
        # for seconds inside a C import; the kernel's parent-death signal itself is immediate
        wait_for(lambda: not any(alive(pid) for pid in pids), 30,
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


def test_sigterm_stops_the_workers_and_exits_143(tmp_path, monkeypatch, capsys):
    """SIGTERM to compare.py (here: this process, running its main) stops every worker's process group, says so in
    one line and exits 143; the workers here are real processes that would sleep for minutes."""
    import threading

    import tools.compare as compare

    started = []

    def sleeper(command, log, env):  # a worker that would outlast the test, started as compare.py starts workers
        started.append(real_start([sys.executable, "-c", "import time; time.sleep(300)"], log, env))
        if len(started) == 2:
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return started[-1]

    real_start = compare.start_worker
    monkeypatch.setattr(compare, "start_worker", sleeper)

    def unhandled(signum, frame):  # main did not take SIGTERM over: fail, rather than let it end pytest
        raise AssertionError("SIGTERM reached the handler that was there before compare.main")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        code = compare.main(["--preset", "cpu", "--out", str(tmp_path / "cmp"), "--seeds", "0", "1", "--jobs", "2"])
    finally:
        for process in started:  # only what this test started, should main have left it
            if process.poll() is None:
                process.kill()
                process.wait()
        restored = signal.signal(signal.SIGTERM, before)
    assert code == 143
    assert [process.returncode for process in started] == [-signal.SIGTERM] * 2  # stopped by compare, not here
    err = capsys.readouterr().err
    assert err.startswith("terminated (SIGTERM): every worker was stopped") and err.count("\n") == 1
    assert restored is unhandled  # main put back the handler it found


def test_out_messages(tmp_path, capsys):
    """--out a file: one line. A folder whose comparison failed before any run finished (preset.json and logs) is
    not an earlier comparison; one with a run's result or checkpoint is, and is named."""
    from dr_fdsl.errors import ConfigError, DataError
    from tools.compare import main

    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file"), "--seeds", "0"]) == 2
    assert capsys.readouterr().err == (f"error: --out '{tmp_path / 'file'}' is a file, not a folder; choose a folder "
                                       "(new or empty) for the comparison\n")
    out = tmp_path / "cmp"
    # A first config that fails is refused before any run starts, and leaves no comparison behind.
    with pytest.raises(ConfigError, match="renderer.nonsense"):
        main(["--out", str(out), "--seeds", "0", "--pretrain-set", "renderer.nonsense=1"])
    assert not out.exists()
    # A comparison that fails in its first run (no such dataset): again into the same --out, the same error.
    common = ["--out", str(out), "--seeds", "0", "--epochs", "1", "--dataset", f"folder:{tmp_path / 'nothing'}"]
    for _ in range(2):
        with pytest.raises(DataError, match="nothing"):
            main(common)
    assert (out / "preset.json").is_file()
    for result in ("finetune/none_s0/finetune.json", "pretrain/frozen_s0/checkpoints/step_0000004/x", "rows.json"):
        (out / result).parent.mkdir(parents=True, exist_ok=True)
        (out / result).write_text("{}")
        assert main(common) == 2
        named = result.split("/x")[0]
        assert capsys.readouterr().err == (f"error: '{out}' holds an earlier comparison ({named}); choose another "
                                           "--out (nothing is overwritten)\n")
        (out / result).unlink()
        if result.endswith("/x"):
            (out / result).parent.rmdir()


def test_ctrl_c_in_one_process_is_one_line_and_130(monkeypatch, capsys):
    import tools.compare as compare

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "main", interrupted)
    assert compare.entry([]) == 130
    assert capsys.readouterr().err == "interrupted: compare.py stopped; the runs that finished are under its --out\n"


def test_sigterm_in_one_process_is_one_line_and_143(monkeypatch, capsys):
    """--jobs 1 (and the imports): SIGTERM used to end compare.py silently with the kernel's -15."""
    import tools.compare as compare

    def terminated(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises here

    monkeypatch.setattr(compare, "main", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert compare.entry([]) == 143
    assert capsys.readouterr().err == ("terminated (SIGTERM): compare.py stopped; the runs that finished are under "
                                       "its --out\n")
    assert signal.getsignal(signal.SIGTERM) == before  # the caller's handler is back

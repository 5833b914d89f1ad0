"""Ctrl-C and SIGTERM anywhere: one line and 130 (143), real signals to real processes (dr_fdsl/signals.py)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

from dr_fdsl.checkpoint import list_checkpoints
from dr_fdsl.engine.interrupt import StopRequest
from dr_fdsl.signals import Interrupted, stop_on_signals

SCRIPTS = ["train.py", *(f"tools/{name}.py" for name in (
    "bench", "bench_bank", "bench_image_aug", "bench_mim", "bench_render", "export", "finetune",
    "fractaldb_patch_iou", "make_bank", "preview", "render_dataset"))]


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # already gone
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


@pytest.fixture
def python_handlers():
    """This process's SIGINT and SIGTERM handlers, restored after the test (pytest's own included)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("script, signum", [*((s, signal.SIGINT) for s in SCRIPTS), ("train.py", signal.SIGTERM)])
def test_a_signal_while_torch_is_imported_ends_in_one_line(script, signum):
    """The signal arrives once the script has set its handlers, as its first statement, while its imports run
    (seconds: torch, timm, PyTorch3D); it used to end in a KeyboardInterrupt traceback through importlib."""
    proc = subprocess.Popen([sys.executable, str(ROOT / script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while not catches(proc.pid, signal.SIGTERM) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        assert catches(proc.pid, signal.SIGTERM), "the script never set its handlers"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    name = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
    assert (proc.returncode, err) == (128 + signum, f"{name} while starting\n")


def test_sigterm_is_a_stop_at_the_next_step_and_a_second_one_is_at_once(python_handlers):
    stop_on_signals()
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == signal.SIGTERM  # asked, nothing raised yet
        with pytest.raises(Interrupted) as caught:
            stop.check(type("OneProcess", (), {"num_processes": 1})())
        assert caught.value.code == 143
        with pytest.raises(Interrupted):  # Python runs the handler before the next statement
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Interrupted):  # the script's own handler is back
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_training_stops_at_a_step_with_143_naming_the_checkpoint(tmp_path, bank_dir, capsys,
                                                                                python_handlers):
    """train.py's main, in this process, as entry() runs it; the SIGTERM comes from another thread."""
    from train import main

    out = tmp_path / "run"
    args = ["--config", str(ROOT / "configs/quickstart.yaml"), f"output_dir={out}", f"bank.cache_dir={bank_dir}",
            "bank.num_classes=4", "bank.num_points=300", "model.name=test_vit", "train.batch_size=8",
            "train.max_steps=100000", "train.ckpt_every=2", "train.eval_every=1000", "train.eval_images=16",
            "train.image_every=1000", "train.progress=false"]

    def terminate_after_a_checkpoint():
        deadline = time.monotonic() + 120
        while not list_checkpoints(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    stop_on_signals()
    threading.Thread(target=terminate_after_a_checkpoint, daemon=True).start()
    assert main(args) == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    newest = list_checkpoints(out)[-1]
    assert line.startswith("terminated (SIGTERM) at step ")
    assert line.endswith(f"; last checkpoint: {newest}. Continue with --resume latest")


@pytest.mark.slow
def test_ctrl_c_of_a_two_process_run_ends_every_rank_within_10_s(tmp_path):
    """One repetition of tools/ctrl_c_torchrun.py (run it for 20): torchrun passes the terminal's SIGINT to both
    ranks; each must be gone within 10 s, rank 0 printing one line and no rank a traceback."""
    from tools.ctrl_c_torchrun import interrupt_once

    passed, what = interrupt_once(0, "training", 10.0, tmp_path)
    assert passed, what


def test_a_stop_request_that_meets_no_step_boundary_ends_the_process(tmp_path):
    """A rank blocked where no Python handler runs (here a wait that never reaches a step boundary) still ends,
    with the signal's code and one line, once STOP_GRACE_S has passed (torchrun would otherwise kill it at 30 s)."""
    script = tmp_path / "blocked.py"
    script.write_text(
        "import os, signal, threading\n"
        "from dr_fdsl.engine import interrupt\n"
        "from dr_fdsl.signals import stop_on_signals\n"
        "interrupt.STOP_GRACE_S = 1.0\n"
        "stop_on_signals()\n"
        "with interrupt.StopRequest():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    threading.Event().wait(60)\n"
        "print('reached a boundary')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 143, out.stderr[-2000:]
    assert out.stdout == "" and out.stderr.strip().splitlines() == [
        "terminated (SIGTERM) with no step boundary within 1 s (blocked in a collective or a kernel); the newest "
        "checkpoint is whole"]

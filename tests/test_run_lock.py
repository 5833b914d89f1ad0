"""One run per folder: the output_dir lock (dr_fdsl/run_lock.py, build.claim_output_dir), held by real processes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, ROOT, run_processes, tiny

from dr_fdsl import run_lock
from dr_fdsl.engine import build_run
from dr_fdsl.engine.build import lock_free_folder
from dr_fdsl.run_lock import FolderLockedError
from tools.ctrl_c_torchrun import rank_tracebacks

# A process that takes a folder's lock with the project's own code, says so, and holds it until its stdin closes.
HOLDER = ("import sys; from dr_fdsl import run_lock; run_lock.lock(sys.argv[1]); print('locked', flush=True); "
          "sys.stdin.read()")


@pytest.fixture
def holder():
    """``holder(folder)`` starts a process holding ``folder``'s lock; returns it (killed at the end)."""
    started = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        started.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_locked_folder_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path, holder):
    proc = holder(tmp_path / "run")
    with pytest.raises(FolderLockedError, match=rf"output_dir '{tmp_path / 'run'}' is in use by another run "
                                                rf"\(pid {proc.pid}, holding .*\.lock\)"):
        run_lock.lock(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)  # no clean-up ran: the kernel dropped the lock with the process
    proc.wait()
    run_lock.lock(tmp_path / "run")
    assert run_lock.holds(tmp_path / "run")
    run_lock.release(tmp_path / "run")
    assert not run_lock.holds(tmp_path / "run")


def test_build_run_refuses_a_folder_held_by_a_live_run_fresh_or_resumed(tmp_path, bank_dir, holder):
    """Refused before anything is written: no config, no TensorBoard events of the refused run."""
    proc = holder(tmp_path / "run")
    for resume in (None, "latest"):
        with pytest.raises(FolderLockedError, match=rf"in use by another run \(pid {proc.pid}"):
            build_run(tiny(tmp_path, bank_dir), resume=resume)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]


def test_finetune_refuses_an_output_dir_another_run_is_writing(tmp_path, holder, capsys):
    from tools.finetune import main

    proc = holder(tmp_path / "ft")
    assert main(["--config", str(ROOT / "configs/finetune/fashion_mnist.yaml"), f"output_dir={tmp_path / 'ft'}"]) == 2
    assert capsys.readouterr().err == (f"error: output_dir '{tmp_path / 'ft'}' is in use by another run (pid "
                                       f"{proc.pid}, holding {tmp_path / 'ft' / '.lock'}); wait for it to end, stop "
                                       "it, or choose another output_dir\n")


def test_new_runs_number_their_folders_passing_over_one_another_runs_just_took(tmp_path, holder):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 0\n")  # a finished run's: not locked, but used
    assert lock_free_folder(str(out)) == f"{out}-2"  # sequential runs: the README's runs/quickstart-2
    run_lock.release(f"{out}-2")
    holder(Path(f"{out}-2"))  # a new run that got there first, before writing its config
    assert lock_free_folder(str(out)) == f"{out}-3"
    assert not run_lock.holds(out)  # only the chosen folder stays locked
    run_lock.release(f"{out}-3")


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_folder_exactly_one_runs_there(tmp_path, bank_dir):
    """Seeds 11 and 12 into one output_dir at the same moment: one trains there, the other is refused in one line
    (or, if it came after the first ended, writes to a numbered folder); each folder describes its own run."""
    args = [str(ROOT / "train.py"), "--config", str(ROOT / "configs/quickstart.yaml"), f"output_dir={tmp_path / 'x'}",
            f"bank.cache_dir={bank_dir}", "bank.num_classes=4", "bank.num_points=300", "model.name=test_vit",
            "train.batch_size=8", "train.max_steps=6", "train.ckpt_every=3", "train.eval_every=3",
            "train.eval_images=16", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {seed: subprocess.Popen([sys.executable, *args, f"seed={seed}"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for seed in (11, 12)}
    try:
        results = {seed: (proc.communicate(timeout=300), proc.returncode) for seed, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    folders = {}  # seed -> the folder it trained in
    for seed, ((out, err), rc) in results.items():
        if rc == 0:
            folders[seed] = Path(out.split("logs and checkpoints in ")[1].strip())
        else:  # refused in one line before writing anything
            assert rc == 2 and err.strip().splitlines()[-1].startswith(f"error: output_dir '{tmp_path / 'x'}' is in "
                                                                       "use by another run (pid "), err[-2000:]
            assert "Traceback" not in err
    assert folders and len(set(folders.values())) == len(folders)  # at least one ran; never two in one folder
    for seed, folder in folders.items():  # and each folder describes only its own run
        assert f"seed: {seed}\n" in (folder / "config.yaml").read_text()
        # its own pid (not the lock file's: a run that came after the first ended locks the used folder for a moment
        # to see that it is used, and leaves its pid there on its way to a numbered one)
        writer = str(procs[seed].pid)
        events = list(folder.glob("events.out.tfevents.*"))  # name: ...<host>.<pid>.<n>
        assert events and {e.name.split(".")[-2] for e in events} == {writer}
        assert json.loads((folder / "summary.json").read_text())["step"] == 6
        assert [p.name for p in sorted((folder / "checkpoints").iterdir())] == ["step_0000003", "step_0000006"]


@pytest.mark.slow
def test_every_rank_of_a_torchrun_job_learns_that_the_folder_is_locked(tmp_path, bank_dir, holder):
    """Only rank 0 takes the lock; the other learns the refusal from it and exits too (no hang at a collective),
    without printing the same line again."""
    proc = holder(tmp_path / "run")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    out = run_processes([os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2",
                         str(ROOT / "train.py"), "--config", str(ROOT / "configs/quickstart.yaml"),
                         f"output_dir={tmp_path / 'run'}", f"bank.cache_dir={bank_dir}"], timeout=240, env=env)
    assert out.returncode != 0
    assert out.stderr.count(f"is in use by another run (pid {proc.pid}") == 1, out.stderr[-3000:]  # rank 0's
    assert not rank_tracebacks(out.stderr), out.stderr[-3000:]

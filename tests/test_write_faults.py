"""A write that fails anywhere in a run (here TensorBoard's writer thread on a full disk) ends train.py in one
line naming the newest complete checkpoint, exit 2. The fault is real: a small tmpfs where this machine lets us
mount one, else a file-size limit on the process (RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail with EFBIG)."""

import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, tiny

from dr_fdsl.checkpoint import list_checkpoints
from dr_fdsl.cli import write_fault
from dr_fdsl.engine import build_run, fit


@pytest.fixture
def small_disk(tmp_path):
    """(folder, preexec_fn): a folder on an 8 MiB tmpfs and nothing to do in the child, or, where mounting is not
    allowed, a plain folder and a child limited to 64 KiB per file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0 if shutil.which("mount") else False

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    yield mount, (None if mounted else limit_file_size)
    if mounted:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_under_tensorboard_ends_in_one_line_naming_the_newest_checkpoint(tmp_path, bank_dir,
                                                                                     small_disk):
    """The run trains two steps on a normal disk, moves to the small one and is resumed there; every step then
    logs images until TensorBoard's writer thread fails. Checkpoint writes are not this test's (loop.py's own)."""
    disk, preexec = small_disk
    fit(build_run(tiny(tmp_path, bank_dir, "train.max_steps=2", "train.image_every=1000", "train.eval_every=1000")))
    shutil.copytree(tmp_path / "run" / "checkpoints", disk / "run" / "checkpoints")
    if preexec is None:  # the tmpfs: what is left on it after the checkpoint is what TensorBoard may use
        free = shutil.disk_usage(disk).free
        with open(disk / "filler", "wb") as filler:
            filler.write(b"\0" * max(0, free - 96 * 1024))
    newest = list_checkpoints(disk / "run")[-1]
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(tmp_path / "run" / "config.yaml"),
                          "--resume", "latest", f"output_dir={disk / 'run'}", "train.max_steps=100000",
                          "train.image_every=1", "train.log_every=1", "train.ckpt_every=100000",
                          "train.eval_every=100000"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         preexec_fn=preexec, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    reason = "No space left on device" if preexec is None else "File too large"
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        f"error: could not write a file in '{disk / 'run'}' ({reason}; disk full, read-only or over a size "
        f"limit?); the newest complete checkpoint: {newest}"], out.stderr[-3000:]


def test_storage_runtime_errors_are_write_faults_and_others_are_not():
    try:
        try:
            raise OSError(28, "No space left on device", "/x/model.safetensors")
        except OSError as err:
            raise RuntimeError("could not save") from err
    except RuntimeError as err:
        assert write_fault(err, None) == ("error: could not write '/x/model.safetensors' (No space left on device; "
                                          "disk full, read-only or over a size limit?); the newest complete "
                                          "checkpoint: none yet")
    torch_save = RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")
    assert "unexpected pos 64" in write_fault(torch_save, "runs/x/checkpoints/step_0000010", "runs/x")
    assert write_fault(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), None) is None  # a bug
    assert write_fault(ValueError("No space left on device"), None) is None
    try:  # a bug inside a library's ``except OSError:`` is a bug (its context is an OSError, its cause is not)
        try:
            raise FileNotFoundError(2, "No such file or directory", "/x/cache.json")
        except OSError:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied") from None
    except RuntimeError as err:
        assert isinstance(err.__context__, OSError) and write_fault(err, None) is None

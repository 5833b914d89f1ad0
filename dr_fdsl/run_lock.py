"""One run per folder: an exclusive OS lock on ``output_dir/.lock``, held by the main process for the whole run.

The lock is ``fcntl.flock`` on an open file: the kernel drops it when the process dies, however it dies (crash,
SIGKILL, power cut of a local disk), so a dead run never leaves a stale lock and there is nothing to clean up. The
file holds the holder's pid, only so that a refused run can name it. flock is advisory and per open file, so two
processes (or two opens in one process) exclude each other; across machines it holds only on filesystems that
pass flock through (local disks; NFS v4, Lustre with ``flock`` mounted).

A process keeps the locks it took until it exits or calls :func:`release`; taking a lock it already holds again
succeeds (one process building a run, then a resumed run into the same folder, as tests and notebooks do).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from dr_fdsl.errors import DrFdslError

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}  # resolved folder -> open file descriptor holding the lock


class FolderLockedError(DrFdslError, RuntimeError):
    """The folder is locked by a live run (another process); the message names the folder and its pid."""


def _holder(path: Path) -> str:
    """The pid written by the lock's holder; it writes it just after locking, so an empty file is re-read."""
    for _ in range(20):
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


def lock(folder: str | Path, what: str = "output_dir", wait: float = 0.0) -> Path:
    """Creates ``folder`` if needed and takes its lock, trying for up to ``wait`` seconds; returns the lock file.

    Raises :class:`FolderLockedError` when another process holds it, and ``OSError`` when the folder or the lock
    file cannot be created (the caller names the setting).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key, path = folder.resolve(), folder / LOCK_FILE
    if key in _held:
        return path
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # not inherited by any child process
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
    except BlockingIOError:
        os.close(fd)
        raise FolderLockedError(
            f"{what} '{folder}' is in use by another run (pid {_holder(path)}, holding {path}); wait for it to end, "
            f"stop it, or choose another {what}") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    _held[key] = fd
    return path


def release(folder: str | Path) -> None:
    """Drops this process's lock on ``folder`` (a no-op when it holds none). The file stays: removing it would
    let a third process lock a new file while a second still waits on the old one."""
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)


def holds(folder: str | Path) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return Path(folder).resolve() in _held

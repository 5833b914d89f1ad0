"""What every entry script does with a user's error: one ``error: ...`` line on stderr and exit code 2."""

from __future__ import annotations

import sys
import threading

from dr_fdsl.errors import is_write_fault
from dr_fdsl.signals import is_main_rank

USER_ERROR = 2  # exit code of every error a user can fix (the message says how)


def report(err: BaseException, writing: str | None = None) -> int:
    """Prints ``err`` as ``error: ...`` and returns :data:`USER_ERROR`. With ``writing`` (a path the script was
    writing), an ``OSError`` is reported as that path being unwritable (disk full, permissions, not a folder). An
    error that every process of a launch raised alike (``err.on_every_process``) is printed by rank 0 only."""
    if getattr(err, "on_every_process", False) and not is_main_rank():
        return USER_ERROR
    if writing is not None and isinstance(err, (FileExistsError, NotADirectoryError)):  # mkdir where a file is
        message = f"cannot write '{writing}': '{err.filename or writing}' is a file, not a folder; choose another --out"
    elif writing is not None and isinstance(err, OSError):
        message = f"cannot write '{writing}' ({err.strerror or err}); choose another --out"
    else:
        message = str(err)
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR


def write_fault(err: BaseException, safe: object, folder: object = None, checkpoints: bool = True) -> str | None:
    """The one ``error: ...`` line for a failed write (:func:`is_write_fault`), naming what failed (the file, else
    ``folder``) and, for a tool that writes checkpoints, what is safe (``safe``: the newest complete checkpoint;
    "none yet" when it is None). None when ``err`` is something else (a bug: its traceback is what to read)."""
    if not is_write_fault(err):
        return None
    cause = err if isinstance(err, OSError) else err.__cause__
    if isinstance(cause, OSError):
        reason = cause.strerror or str(cause)
        what = f"'{cause.filename}'" if cause.filename else None
    else:
        reason, what = str(err).strip().splitlines()[0][:200], None
    what = what or (f"a file in '{folder}'" if folder else "a file")
    line = f"error: could not write {what} ({reason}; disk full, read-only or over a size limit?)"
    return f"{line}; the newest complete checkpoint: {safe or 'none yet'}" if checkpoints else line


class ThreadWriteFaults:
    """``with ThreadWriteFaults() as faults:`` keeps a write fault raised in a background thread (TensorBoard's
    event writer on a full disk) from printing its traceback; ``faults.first`` is the first of them. TensorBoard
    raises the same error again at the next write or at close, where the entry script reports it in one line;
    one that never came back is the entry script's to report at the end."""

    def __init__(self) -> None:
        self.first: BaseException | None = None
        self._previous = None

    def __enter__(self) -> ThreadWriteFaults:
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def __exit__(self, *exc) -> None:
        threading.excepthook = self._previous

    def _hook(self, args) -> None:
        if write_fault(args.exc_value, None) is None:
            self._previous(args)
        elif self.first is None:
            self.first = args.exc_value

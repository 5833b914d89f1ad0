"""What every entry script does with a user's error: one ``error: ...`` line on stderr and exit code 2."""

from __future__ import annotations

import sys
import threading

from dr_fdsl.signals import is_main_rank

USER_ERROR = 2  # exit code of every error a user can fix (the message says how)


def report(err: BaseException, writing: str | None = None) -> int:
    """Prints ``err`` as ``error: ...`` and returns :data:`USER_ERROR`. With ``writing`` (a path the script was
    writing), an ``OSError`` is reported as that path being unwritable (disk full, permissions, not a folder). An
    error that every process of a launch raised alike (``err.on_every_process``) is printed by rank 0 only."""
    if getattr(err, "on_every_process", False) and not is_main_rank():
        return USER_ERROR
    if writing is not None and isinstance(err, OSError):
        message = f"cannot write '{writing}' ({err.strerror or err}); choose another --out"
    else:
        message = str(err)
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR


# Words of the RuntimeErrors that storage faults become inside libraries: torch.save's zip writer ("file write
# failed", "unexpected pos"), or an errno's text passed on in a message.
_STORAGE_WORDS = ("file write failed", "unexpected pos", "No space left on device", "File too large",
                  "Read-only file system", "Disk quota exceeded", "Input/output error")


def write_fault(err: BaseException, safe: object, folder: object = None) -> str | None:
    """The one ``error: ...`` line for a failed write (any ``OSError``, or a ``RuntimeError`` that a storage fault
    became), naming what failed (the file, else ``folder``) and what is safe (``safe``: the newest complete
    checkpoint; "none yet" when it is None). None when ``err`` is something else (a bug: its traceback is what to
    read)."""
    cause = err if isinstance(err, OSError) else err.__cause__ or err.__context__
    if isinstance(cause, OSError):
        reason = cause.strerror or str(cause)
        what = f"'{cause.filename}'" if cause.filename else None
    elif isinstance(err, RuntimeError) and any(w in str(err) for w in _STORAGE_WORDS):
        reason, what = str(err).strip().splitlines()[0][:200], None
    else:
        return None
    what = what or (f"a file in '{folder}'" if folder else "a file")
    return (f"error: could not write {what} ({reason}; disk full, read-only or over a size limit?); the newest "
            f"complete checkpoint: {safe or 'none yet'}")


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

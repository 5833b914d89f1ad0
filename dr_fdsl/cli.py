"""What every entry script does with a user's error: one ``error: ...`` line on stderr and exit code 2."""

from __future__ import annotations

import sys

USER_ERROR = 2  # exit code of every error a user can fix (the message says how)


def report(err: BaseException, writing: str | None = None) -> int:
    """Prints ``err`` as ``error: ...`` and returns :data:`USER_ERROR`. With ``writing`` (a path the script was
    writing), an ``OSError`` is reported as that path being unwritable (disk full, permissions, not a folder)."""
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


def write_fault(err: BaseException, safe: object, none: str = "none yet") -> str | None:
    """The one ``error: ...`` line for a failed write (any ``OSError``, or a ``RuntimeError`` that a storage fault
    became), naming what failed and what is safe (``safe``, e.g. the newest complete checkpoint, or ``none``);
    None when ``err`` is something else (a bug, whose traceback is what to read)."""
    cause = err if isinstance(err, OSError) else err.__cause__ or err.__context__
    if isinstance(cause, OSError):
        what = f"'{cause.filename}'" if cause.filename else "a file"
        reason = cause.strerror or str(cause)
    elif isinstance(err, RuntimeError) and any(w in str(err) for w in _STORAGE_WORDS):
        what, reason = "a file", str(err).strip().splitlines()[0][:200]
    else:
        return None
    return (f"error: could not write {what} ({reason}: disk full, read-only or over a size limit?); "
            f"safe: {safe or none}")

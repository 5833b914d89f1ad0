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

"""Ctrl-C and SIGTERM for the entry scripts: one line and an exit code that says which, wherever they land.

Imports nothing heavy, so an entry script installs it before ``import torch`` (seconds, where a Ctrl-C used to end
in a traceback through torch's import machinery):

    import sys

    from dr_fdsl.signals import entry, starting

    with starting(__name__):  # does nothing when the script is imported (tests)
        import torch
        ...

    if __name__ == "__main__":
        sys.exit(entry(main))

Exit codes follow the shell's 128 + signal number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM (``kill``, a
scheduler's end of job, a launcher stopping its workers), so a caller can tell a stop from an error (2) or a crash
(1). Under a launcher (torchrun, accelerate) only rank 0 prints the line; every rank exits with the code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A ``KeyboardInterrupt``, so code that cleans up on Ctrl-C cleans up on both."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def code(self) -> int:
        return 128 + self.signum


def exit_code(err: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (a plain ``KeyboardInterrupt`` included), 143 for SIGTERM."""
    return err.code if isinstance(err, Interrupted) else 128 + signal.SIGINT


def raise_interrupted(signum: int, frame) -> None:
    """A signal handler: raises :class:`Interrupted` in the main thread, at once."""
    raise Interrupted(signum)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` from now on (a signal ignored by the parent stays ignored, as
    a background job's SIGINT is). Call it first thing in the main thread of an entry script."""
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, raise_interrupted)


def is_main_rank() -> bool:
    """Rank 0 of a launcher's processes, or a process without a launcher (read before torch is imported)."""
    return os.environ.get("RANK", "0") == "0"


def say_interrupted(err: KeyboardInterrupt, where: str = "") -> int:
    """Prints ``interrupted <where>`` (rank 0 only) and returns the exit code. ``where`` says what is safe."""
    if is_main_rank():
        name = "terminated (SIGTERM)" if exit_code(err) == 128 + signal.SIGTERM else "interrupted"
        print(f"{name} {where}".rstrip(), file=sys.stderr, flush=True)
    return exit_code(err)


@contextlib.contextmanager
def starting(module_name: str) -> Iterator[None]:
    """Around an entry script's imports, when it runs as ``__main__``: :func:`stop_on_signals`, and a stop during
    the block exits at once with its line (``interrupted while starting``) and code. Imported (by a test), the
    script changes no handler."""
    if module_name != "__main__":
        yield
        return
    stop_on_signals()
    try:
        yield
    except KeyboardInterrupt as err:
        sys.exit(say_interrupted(err, "while starting"))


def entry(main: Callable[[], int | None], where: str = "") -> int:
    """Runs an entry script's ``main()`` and returns its exit code; a stop that reaches here is reported in one
    line (see :func:`say_interrupted`). ``main`` catches its own where it can say more (a step, a checkpoint).

    Afterwards SIGINT and SIGTERM get the kernel's default action back: a signal while the interpreter shuts down
    ends the process at once, without a traceback from whatever destructor it landed in.
    """
    try:
        return main() or 0
    except KeyboardInterrupt as err:
        return say_interrupted(err, where)
    finally:
        for signum in SIGNALS:
            if signal.getsignal(signum) is raise_interrupted:
                signal.signal(signum, signal.SIG_DFL)

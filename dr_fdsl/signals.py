"""Ctrl-C and SIGTERM for the entry scripts: one line and an exit code that says which, wherever they land.

Imports nothing heavy, so an entry script installs it before ``import torch`` (seconds, where a Ctrl-C used to end
in a traceback through torch's import machinery):

    import sys

    from dr_fdsl.signals import entry, quiet_start

    if __name__ == "__main__":  # not when a test imports the script
        quiet_start()

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
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

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
    a background job's SIGINT is). :func:`entry` calls it in the main thread before ``main``."""
    for signum in SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):
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


def quiet_start() -> None:
    """Until :func:`entry` runs ``main``: a SIGINT or SIGTERM ends the process at once with ``interrupted while
    starting`` (or ``terminated (SIGTERM) while starting``) and its code, nothing having been written yet. Called
    by an entry script before its heavy imports, under ``if __name__ == "__main__":`` (imported by a test, the
    script changes no handler)."""
    for signum in SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):
            signal.signal(signum, _leave_at_once)


def _leave_at_once(signum: int, frame) -> None:
    leave(say_interrupted(Interrupted(signum), "while starting"))


def entry(main: Callable[[], int | None], where: str = "") -> int:
    """Runs an entry script's ``main()`` and returns its exit code; a stop that reaches here is reported in one
    line (see :func:`say_interrupted`). ``main`` catches its own where it can say more (a step, a checkpoint).

    A stopped script (130, 143) ends here, through :func:`leave`: the user asked for the process to go, and the
    interpreter's teardown of torch takes seconds (3.5 s measured on a loaded 2-core machine; under torchrun that
    made a Ctrl-C take 8 s of the 10 allowed). Otherwise SIGINT and SIGTERM get the kernel's default action back,
    so a signal while the interpreter shuts down ends the process at once, without a traceback from whatever
    destructor it landed in.
    """
    stop_on_signals()
    try:
        code = main() or 0
    except KeyboardInterrupt as err:
        code = say_interrupted(err, where)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        leave(code)
    for signum in SIGNALS:
        if signal.getsignal(signum) is raise_interrupted:
            signal.signal(signum, signal.SIG_DFL)
    return code


def leave(code: int) -> NoReturn:
    """Ends the process now with ``code``: logging and stdio flushed, no interpreter teardown. For a process whose
    files are closed (the entry scripts close theirs: checkpoints are renamed when written, trackers finished)."""
    if threading.current_thread() is threading.main_thread():  # handlers can be set from the main thread only
        for signum in SIGNALS:  # a second signal from here on must not raise into the flush below
            signal.signal(signum, signal.SIG_IGN)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(code)

"""Ctrl-C between steps. A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside a
library's bookkeeping (a queue of TensorBoard events, a half-written file) and leave the exit hanging. So the first
SIGINT (or SIGTERM) only asks the loop to stop: it raises ``Interrupted`` (a ``KeyboardInterrupt``) itself at the
next micro-step boundary, on every process at the same one. A second one interrupts at once, as usual.

A process blocked in C (a collective whose peer died, a long kernel) runs no Python signal handler until it returns,
so a rank that torchrun or a scheduler signals would sit until it is killed: after the first signal a timer thread,
which runs while the main thread waits in C, ends the process with the signal's code if no step boundary came
within :data:`STOP_GRACE_S` (checkpoints are written then renamed, so the newest stays whole)."""

from __future__ import annotations

import signal
import threading

import torch

from dr_fdsl.signals import SIGNALS, Interrupted, leave, raise_interrupted, say_interrupted

_PYTHON_DEFAULT = {signal.SIGINT: signal.default_int_handler}  # SIGTERM's default is the kernel's: no Python code
STOP_GRACE_S = 10.0  # how long a stop request waits for a step boundary before the process leaves at once


class StopRequest:
    """``with StopRequest() as stop:`` holds SIGINT and SIGTERM for the block (only from the main thread, and only
    where the handler is Python's default or :func:`dr_fdsl.signals.raise_interrupted`, an entry script's);
    ``stop.check(accelerator)`` raises :class:`~dr_fdsl.signals.Interrupted` on every process once any process was
    asked to stop (SIGTERM's when any process got one, so every rank exits with the same code)."""

    def __init__(self) -> None:
        self.requested = 0  # the signal number that asked to stop, 0 while none did
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) in (raise_interrupted, _PYTHON_DEFAULT.get(signum)):
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:  # a boundary was reached (or training ended): the caller ends the process its way
            self._timer.cancel()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: now
            raise Interrupted(signum)
        self.requested = signum
        self._timer = threading.Timer(STOP_GRACE_S, self._leave_now, (signum,))
        self._timer.daemon = True
        self._timer.start()

    @staticmethod
    def _leave_now(signum: int) -> None:
        leave(say_interrupted(Interrupted(signum), f"with no step boundary within {STOP_GRACE_S:.0f} s (blocked in "
                                                   "a collective or a kernel); the newest checkpoint is whole"))

    def check(self, accelerator) -> None:
        """Collective when there are several processes (one tiny all-gather): call it at the same point on all."""
        requested = self.requested
        if accelerator.num_processes > 1:  # one process may have been signalled a step earlier than another
            flag = torch.tensor([float(requested)], device=accelerator.device)
            requested = int(accelerator.gather(flag).max().item())
        if requested:
            raise Interrupted(requested)

"""Ctrl-C between steps. A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside a
library's bookkeeping (a queue of TensorBoard events, a half-written file) and leave the exit hanging. So the first
SIGINT (or SIGTERM) only asks the loop to stop: it raises ``Interrupted`` (a ``KeyboardInterrupt``) itself at the
next micro-step boundary, on every process at the same one. A second one interrupts at once, as usual."""

from __future__ import annotations

import signal
import threading

import torch

from dr_fdsl.signals import SIGNALS, Interrupted, raise_interrupted

_PYTHON_DEFAULT = {signal.SIGINT: signal.default_int_handler}  # SIGTERM's default is the kernel's: no Python code


class StopRequest:
    """``with StopRequest() as stop:`` holds SIGINT and SIGTERM for the block (only from the main thread, and only
    where the handler is Python's default or :func:`dr_fdsl.signals.raise_interrupted`, an entry script's);
    ``stop.check(accelerator)`` raises :class:`~dr_fdsl.signals.Interrupted` on every process once any process was
    asked to stop (SIGTERM's when any process got one, so every rank exits with the same code)."""

    def __init__(self) -> None:
        self.requested = 0  # the signal number that asked to stop, 0 while none did
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) in (raise_interrupted, _PYTHON_DEFAULT.get(signum)):
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: now
            raise Interrupted(signum)
        self.requested = signum

    def check(self, accelerator) -> None:
        """Collective when there are several processes (one tiny all-gather): call it at the same point on all."""
        requested = self.requested
        if accelerator.num_processes > 1:  # one process may have been signalled a step earlier than another
            flag = torch.tensor([float(requested)], device=accelerator.device)
            requested = int(accelerator.gather(flag).max().item())
        if requested:
            raise Interrupted(requested)

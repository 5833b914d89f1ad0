"""Ctrl-C between steps. A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside a
library's bookkeeping (a queue of TensorBoard events, a half-written file) and leave the exit hanging. So the first
SIGINT only asks the loop to stop: it raises ``KeyboardInterrupt`` itself at the next micro-step boundary, on every
process at the same one. A second SIGINT interrupts at once, as usual."""

from __future__ import annotations

import signal
import threading

import torch


class StopRequest:
    """``with StopRequest() as stop:`` holds SIGINT for the block (only from the main thread, and only where no one
    else has replaced Python's default handler); ``stop.check(accelerator)`` raises ``KeyboardInterrupt`` on every
    process once any process was asked to stop."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopRequest:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second press: now
            raise KeyboardInterrupt
        self.requested = True

    def check(self, accelerator) -> None:
        """Collective when there are several processes (one tiny all-reduce): call it at the same point on all."""
        requested = self.requested
        if accelerator.num_processes > 1:  # one process may have been signalled a step earlier than another
            flag = torch.tensor([float(requested)], device=accelerator.device)
            requested = bool(accelerator.reduce(flag, "sum").item() > 0)
        if requested:
            raise KeyboardInterrupt

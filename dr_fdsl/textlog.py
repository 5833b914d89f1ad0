"""The plain-text log of a long-running tool (``log.txt`` in its output folder) and its progress lines.

A job on a cluster has no terminal to watch: every tool that runs long (``train.py``, ``tools/finetune.py``,
``tools/compare.py``) writes its resolved settings, a progress line every so often (step, rate, ETA, losses) and
its evaluations to ``log.txt``, as well as to the console when no progress bar is drawn there. Code deep in the
package (the bank's generation) reports through the ``dr_fdsl`` logger and needs no handle: its lines go wherever
the running tool opened its log, and nowhere when none is open (a library call from Python stays quiet).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

LOG_FILE = "log.txt"
LOGGER = logging.getLogger("dr_fdsl")  # the package's lines: training, fine-tuning, bank generation
_FORMAT = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
_FORMAT.converter = time.gmtime  # UTC: jobs on several machines compare times without knowing their zones


class _Console(logging.StreamHandler):
    """A handler on whatever ``sys.stdout`` is when a line is written (not the one at creation: a test harness or
    a host application may replace and close it meanwhile)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ sets it; the property reads sys.stdout
        pass


class TextLog:
    """``log.txt`` in ``folder`` (appended to: a resumed run goes on in the same file), and the console.

    Args:
        folder: the tool's output folder (created by the caller).
        console: also print each line on stdout (when no progress bar is drawn there).
        logger: which logger's lines it takes (``tools/compare.py`` keeps its own apart from those of the
            trainings it runs, which have their own folders).
    """

    def __init__(self, folder: str | Path, console: bool, logger: logging.Logger = LOGGER) -> None:
        self.path = Path(folder) / LOG_FILE
        self.logger = logger
        self.handlers: list[logging.Handler] = [logging.FileHandler(self.path, mode="a", encoding="utf-8", delay=True)]
        self.handlers[0].setFormatter(_FORMAT)
        if console:
            self.handlers.append(_Console())
            self.handlers[1].setFormatter(logging.Formatter("%(message)s"))
            self.handlers[1].addFilter(lambda record: not getattr(record, "file_only", False))
        logger.setLevel(logging.INFO)
        logger.propagate = False  # not into the root logger: a host application's handlers get none of it
        for handler in self.handlers:
            logger.addHandler(handler)

    def say(self, line: str, file_only: bool = False) -> None:
        """``line`` in log.txt and, unless ``file_only`` (the tool printed it already), on the console."""
        self.logger.info(line, extra={"file_only": file_only})

    def close(self) -> None:
        """Detaches and closes its handlers (idempotent); lines said afterwards go nowhere."""
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.handlers = []


def say(line: str) -> None:
    """A line in the running tool's log (nowhere when none is open)."""
    LOGGER.info(line)


def duration(seconds: float) -> str:
    """``3725`` -> ``"1h02m"``, ``185`` -> ``"3m05s"``, ``12.3`` -> ``"12s"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Rate and ETA of work counted towards ``total``, measured from when it was made (``done`` already done then:
    a resumed run's rate counts only its own steps)."""

    def __init__(self, what: str, total: int, done: int = 0, unit: str = "step") -> None:
        self.what, self.total, self.unit = what, total, unit
        self.start_done, self.start = done, time.monotonic()

    def line(self, done: int, **values: float | str) -> str:
        """``"train 40/400 (10%), 3.21 step/s, eta 1m52s, loss 2.103"``; ``values`` in the order given (floats with
        4 significant digits)."""
        elapsed = time.monotonic() - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = duration((self.total - done) / rate) if rate > 0 else "?"
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        head = (f"{self.what} {done}/{self.total} ({100 * done / max(self.total, 1):.0f}%), "
                f"{rate:.3g} {self.unit}/s, elapsed {duration(elapsed)}, eta {eta}")
        return f"{head}, {shown}" if shown else head


def add_hparams(writer, hparams: dict, metrics: list[str]) -> None:
    """Writes TensorBoard's hyper-parameter table into ``writer``'s own run.

    ``metrics`` are scalar tags the run already logs (``val/top1``): the HParams plugin shows each one's last
    value, so no extra one-point chart is drawn. (``SummaryWriter.add_hparams`` would open a second writer, a
    second run unless ``run_name='.'``, and log each metric again as a one-point chart at step 0.)
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    for summary in hparams_summaries(hparams, dict.fromkeys(metrics, 0.0)):
        writer._get_file_writer().add_summary(summary)

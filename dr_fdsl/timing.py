"""Timing helpers shared by the benchmarks in tools/."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import torch


class Spread(NamedTuple):
    """Wall times of repeated calls, in seconds."""

    min: float
    median: float
    max: float


# Above this max / min over the timed calls, a figure says more about other work on the machine than about the code.
SPREAD_LIMIT = 1.5


def noise_warning(spreads: dict[str, Spread], limit: float = SPREAD_LIMIT) -> str | None:
    """A warning line when the figures are likely noise: a spread (max / min) above ``limit``, or a 1-minute load
    average above the core count (other processes were taking the CPU); None when neither."""
    reasons = []
    noisy = [name for name, s in spreads.items() if s.min > 0 and s.max / s.min > limit]
    if noisy:
        reasons.append(f"max/min above {limit} for {', '.join(noisy)}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        reasons.append(f"load average {load:.1f} on {cores} cores")
    if not reasons:
        return None
    return (f"warning: these figures are probably noise ({'; '.join(reasons)}): other work shares this machine; "
            "compare only figures measured together, rerun when it is idle or with more --steps")


def median_time(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in seconds over ``steps`` calls after ``warmup`` calls (CUDA synchronised)."""
    return time_spread(fn, steps, warmup, device).median


def time_spread(fn, steps: int, warmup: int, device: torch.device) -> Spread:
    """Min, median and max wall time of ``fn()`` in seconds over ``steps`` calls after ``warmup`` calls (CUDA
    synchronised)."""
    for _ in range(warmup):
        fn()
    return _spread([_timed(fn, device.type == "cuda") for _ in range(steps)])


def _spread(times: list[float]) -> Spread:
    times = sorted(times)
    return Spread(times[0], times[len(times) // 2], times[-1])


def _timed(fn, cuda: bool) -> float:
    """Wall time of one ``fn()`` in seconds (CUDA synchronised before and after)."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], steps: int, warmup: int, device: torch.device
                ) -> tuple[dict[str, Spread], list[dict[str, float]]]:
    """Every function of ``fns`` once per round, in turn, for ``warmup`` rounds and then ``steps`` timed ones:
    each function's spread over the timed rounds, and the rounds' wall times in seconds. A load that comes and goes
    weighs on every function of a round alike, so a ratio between two of them is best taken per round
    (:func:`median_ratio`) rather than between medians measured minutes apart."""
    cuda = device.type == "cuda"
    rounds = []
    for i in range(warmup + steps):
        times = {name: _timed(fn, cuda) for name, fn in fns.items()}
        if i >= warmup:
            rounds.append(times)
    return {name: _spread([r[name] for r in rounds]) for name in fns}, rounds


def median_ratio(rounds: list[dict[str, float]], numerator: str, denominator: str) -> float:
    """The median over ``rounds`` (from :func:`interleaved`) of ``numerator``'s time over ``denominator``'s."""
    ratios = sorted(r[numerator] / r[denominator] for r in rounds)
    return ratios[len(ratios) // 2]


def machine_and_peak_memory(device: torch.device) -> tuple[str, float, str]:
    """``(machine, peak MiB, what was measured)``: CUDA peak allocation on a GPU, process peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(), torch.cuda.max_memory_allocated() / 2**20, "CUDA allocated"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"{torch.get_num_threads()} torch threads"
    return machine, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def check_bench_args(parser, args, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (),
                     device: str | None = None, json_path: str | None = None) -> None:
    """Refuses, before anything is built or timed, what a benchmark cannot run with: ``parser.error`` (argparse's
    usage line and one ``error:`` line, exit 2), never a traceback minutes later.

    Args:
        positive / nonnegative: names of ``args`` attributes (``--name`` options) that must be >= 1 / >= 0; None
            (an option left to its config) passes.
        device: a ``--device`` value that torch must parse.
        json_path: a ``--json`` path whose folder must exist and that must not be a folder (the result is written
            after the whole benchmark).
    """
    for names, low in ((positive, 1), (nonnegative, 0)):
        for name in names:
            value = getattr(args, name)
            if value is not None and value < low:
                parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if device is not None:
        try:
            torch.device(device)
        except RuntimeError:
            parser.error(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)")
    if json_path is not None:
        parent = os.path.dirname(os.path.abspath(json_path))
        what = "is a folder" if os.path.isdir(json_path) else None if os.path.isdir(parent) else "has no folder"
        if what:
            parser.error(f"--json {json_path!r} {what}; name a file in an existing folder")


def save_json(path: str, result: dict) -> int:
    """Writes a benchmark's ``result`` as JSON; a failed write (disk full, read-only) is one ``error:`` line.

    Returns:
        the exit code: 0, or 2 after a failed write (the figures were printed already).
    """
    try:
        with open(path, "w") as f:
            f.write(json.dumps(result, indent=2))
    except OSError as err:
        print(f"error: cannot write --json '{path}' ({err.strerror or err}); the figures above are not saved",
              file=sys.stderr)
        return 2
    return 0


def memory_per_image(fn, batch: int, device: torch.device) -> dict[str, float]:
    """Memory of one call of ``fn()`` (a forward and backward), in MiB per image of a ``batch``.

    ``saved_mib_per_image``: the bytes autograd keeps from the forward for the backward (distinct storages, counted
    as the forward saves them): the same on every machine, so a 2x regression shows on a loaded CPU too. On CUDA
    also ``peak_mib_per_image``: ``torch.cuda.max_memory_allocated`` during the call above what was allocated
    before it. (A CPU has no allocator statistics to reset; the process's peak RSS is in ``peak_memory_mib``.)
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    result = {"saved_mib_per_image": round(sum(seen.values()) / 2**20 / batch, 4)}
    if cuda:
        torch.cuda.synchronize()
        result["peak_mib_per_image"] = round((torch.cuda.max_memory_allocated() - before) / 2**20 / batch, 4)
    return result

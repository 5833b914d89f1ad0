"""Timing helpers shared by the benchmarks in tools/."""

from __future__ import annotations

import os
import platform
import resource
import time

import torch


def median_time(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in seconds over ``steps`` calls after ``warmup`` calls (CUDA synchronised)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def machine_and_peak_memory(device: torch.device) -> tuple[str, float, str]:
    """``(machine, peak MiB, what was measured)``: CUDA peak allocation on a GPU, process peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(), torch.cuda.max_memory_allocated() / 2**20, "CUDA allocated"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"{torch.get_num_threads()} torch threads"
    return machine, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"

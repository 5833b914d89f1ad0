"""Sizes a setting implies, checked against the machine before anything is allocated.

Every part that allocates in proportion to a setting (the bank's points and maps, a family's canvas or vertices,
the renderer's fragments and added points, the random feature networks of ``renderer.mode=match``) estimates its
largest buffers from the config alone and calls :func:`need_bytes` from its validation, at load time, so that a
size that cannot fit is one ``error:`` line naming the key and the estimate instead of a kernel OOM kill minutes
later. The estimates count the few largest buffers (element count x bytes per element); they are lower bounds
within a small factor, not profiles, and the limit is the whole memory (what a run could have at best).

Also here: :func:`index_dtype`, the narrowest integer dtype that holds an index below a count (stored indices are
chosen from the count they must hold, never fixed at a width that a setting can exceed).
"""

from __future__ import annotations

import os

from dr_fdsl.errors import ConfigError

FLOAT32, FLOAT64, INT64 = 4, 8, 8


def machine_memory() -> int:
    """Bytes of physical memory of this machine (``os.sysconf``; what a process could have at best)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory(device=None) -> int:
    """Bytes of memory of ``device`` (a ``torch.device``): a CUDA device's total memory, else this machine's."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch  # only where a CUDA device is already in use (no CUDA initialisation at config load)

        return torch.cuda.get_device_properties(device).total_memory
    return machine_memory()


def gib(n: float) -> str:
    """``n`` bytes for a message: ``"12.3 GiB"`` (``"0.004 GiB"`` below 0.1)."""
    value = n / 2**30
    return f"{value:.1f} GiB" if value >= 0.1 else f"{value:.3g} GiB"


def need_bytes(key: str, nbytes: float, what: str, fix: str = "lower it", device=None) -> None:
    """Raises ``ConfigError("config key 'key' (what): would need about X GiB, more than this machine's Y GiB;
    fix")`` when the estimate ``nbytes`` exceeds the memory of ``device`` (None: this machine's memory)."""
    limit = device_memory(device)
    if nbytes > limit:
        on_gpu = getattr(device, "type", None) == "cuda"
        where = f"the {gib(limit)} of GPU {device}" if on_gpu else f"this machine's {gib(limit)}"
        raise ConfigError(f"config key '{key}' ({what}): would need about {gib(nbytes)}, more than {where}; {fix}")


def index_bytes(count: int) -> int:
    """Bytes per element of :func:`index_dtype` ``(count)``, without importing torch (for the checks at load)."""
    for limit, size in zip((2**8, 2**15, 2**31), (1, 2, 4)):
        if count <= limit:
            return size
    return 8


def index_dtype(count: int, library: str = "torch"):
    """The narrowest integer dtype that holds every index in ``[0, count)``: uint8 below 256, int16 below 2^15,
    int32 below 2^31, else int64 (``library``: ``"torch"`` or ``"numpy"``)."""
    if library == "numpy":
        import numpy as np

        choices = (np.uint8, np.int16, np.int32, np.int64)
    else:
        import torch

        choices = (torch.uint8, torch.int16, torch.int32, torch.int64)
    for limit, dtype in zip((2**8, 2**15, 2**31), choices):
        if count <= limit:
            return dtype
    return choices[-1]

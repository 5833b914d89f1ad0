"""Confidence intervals for comparisons over seeds: a mean with its 95% interval, and paired differences.

Arms of a comparison share their seeds (same backbone initialisation and data order per seed), so "A beats B"
is a statement about the per-seed differences A_s - B_s: their mean and its Student-t interval. Two arms whose
own intervals overlap can still differ clearly when their per-seed differences are consistent.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

# Two-sided 95% quantiles of Student's t, t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042)


def t975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, beyond it the Cornish-Fisher expansion around z (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


class Interval(NamedTuple):
    """mean and half-width of its 95% interval (``nan`` with fewer than 2 values); n values."""

    mean: float
    half_width: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return abs(self.mean) > self.half_width  # False when the width is nan

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.half_width:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` and the half-width of its 95% Student-t interval."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, math.nan, n)
    return Interval(mean, t975(n - 1) * statistics.stdev(values) / math.sqrt(n), n)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Interval:
    """``a - b`` over the seeds both have (``{seed: value}``): mean difference and its 95% interval."""
    seeds = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in seeds])

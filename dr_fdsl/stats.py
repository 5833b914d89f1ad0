"""Confidence intervals for comparisons over seeds: a mean with its 95% interval, and paired differences.

Arms of a comparison share their seeds (same backbone initialisation and data order per seed), so "A beats B"
is a statement about the per-seed differences A_s - B_s: their mean and its Student-t interval. Two arms whose
own intervals overlap can still differ clearly when their per-seed differences are consistent.

A study compares many pairs, and each 95% interval holds on its own: :func:`paired_t_test` gives each pair's
two-sided p-value and :func:`holm` adjusts a family of them (Holm's step-down method, which controls the chance of
any false "differs" across the family at 5% without assuming the tests independent).
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
    return mean_interval(differences(a, b))


def differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """``a[s] - b[s]`` for every seed ``s`` both have, in seed order."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for 0 <= x <= 1, by its continued fraction (modified
    Lentz), evaluated where it converges fast (x < (a + 1) / (a + b + 2)) and by symmetry elsewhere."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 400):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df / (df + t^2)}(df / 2, 1 / 2)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isnan(t):
        return math.nan
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t)) if math.isfinite(t) else 0.0


def paired_t_test(a: dict[int, float], b: dict[int, float]) -> float:
    """The two-sided p-value of the paired t-test of ``a - b`` = 0 over the seeds both have (``{seed: value}``);
    ``nan`` with fewer than 2 seeds, 1.0 when every difference is 0, 0.0 when they are equal and not 0."""
    diffs = differences(a, b)
    if len(diffs) < 2:
        return math.nan
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return t_two_sided_p(mean / (sd / math.sqrt(len(diffs))), len(diffs) - 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order: the i-th smallest (from 0) is
    multiplied by (m - i), made non-decreasing along the sorted order and capped at 1. A difference "survives the
    correction" at 5% when its adjusted p-value is below 0.05. ``nan`` entries stay ``nan`` and do not count."""
    known = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted

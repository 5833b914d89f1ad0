"""Single-instance 2D IFS from SVD factors (Anderson & Farrell, "Improving Fractal Pre-training", WACV 2022).

Reference: github.com/catalys1/fractal-pretraining at commit b87adf280e96a981947599a3e0cc5875637d94cf, files
``fractal_learning/fractals/ifs.py`` (sample_svs, sample_system, iterate, ``__main__``) and
``fractal_learning/training/datamodule/datasets/generator.py`` (IFSGenerator.jitter, _basic_jitter). Written anew
from reading that code; what it does:

* Random source: a ``numpy.random.Generator`` (``default_rng()``, unseeded in the published dataset script, so
  the shipped ``ifs-100k.pkl`` cannot be regenerated; given a seeded Generator the sampler is deterministic).
* Map count: ``rng.integers(lo, hi)``, hi exclusive. ``sample_system``'s own default is (2, 8) -> 2..7 maps; the
  dataset script passes ``(min_n, max_n + 1)`` with defaults 2 and 4 -> 2..4 maps (PUBLISHED_NUM_MAPS).
* Per system, in draw order: ``rng.random((2n, 2, 1))`` signs -> base ``diag(+-1, +-1)`` (reflections);
  ``rng.uniform(-pi, pi, 2n)`` rotation angles; ``U = R(theta_i) base_i`` for i < n and ``V`` likewise for the
  next n; the sigma-factor ``alpha ~ U((5 + n) / 2, (6 + n) / 2)``; singular values by sample_svs (below);
  ``A_i = (U_i * s_i) @ V_i`` = U_i diag(s_i) V_i; translations ``rng.uniform(-1, 1, (n, 2))``.
* Singular values: pairs (s1 >= s2) in [0, 1] with sum_i (s1_i + 2 s2_i) = alpha, drawn pair by pair from
  uniforms whose bounds keep the remaining budget reachable; the last pair takes s2 ~ U(max(0, (p-1)/2), p/3)
  and s1 = p - 2 s2 for the remaining budget p.
* Iteration: start at the fixed point of map 0, ``(I - A_0)^-1 b_0``; per step ``r = np.random.rand()`` (numba's
  own MT19937, seeded only if a jitted function seeds it), map k = first with ``r < cumsum(p)[k]`` (strict), the
  last map if none; probabilities ``|det A_i| / sum``; the start point itself is not returned; stops early (rest
  of the array left uninitialised) on a non-finite point.
* Per-image augmentation (training config ``jitter_params: True``): pick one map ``rng.integers(0, n)`` and
  multiply its whole 2 x 3 row, translation included, by ``rng.uniform(0.8, 1.1)``; retried up to 4 times while
  the largest singular value of any map exceeds 1, else the system is used unjittered.
"""

from __future__ import annotations

import numpy as np

PUBLISHED_NUM_MAPS = (2, 5)  # ifs.py __main__: n=(min_n, max_n + 1) with min_n=2, max_n=4 -> 2..4 maps
SAMPLE_SYSTEM_DEFAULT_MAPS = (2, 8)  # sample_system(n=None): rng.integers(2, 8) -> 2..7 maps
JITTER_RANGE = (0.8, 1.1)  # generator._basic_jitter prange
JITTER_ATTEMPTS = 4  # generator.jitter


def sigma_factor_bounds(n: int) -> tuple[float, float]:
    """The published interval for alpha = sum over maps of (s1 + 2 s2): ((5 + n) / 2, (6 + n) / 2)."""
    return (5 + n) / 2, (6 + n) / 2


def sample_singular_values(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Singular value pairs with 1 >= s1 >= s2 >= 0 and sum(s1 + 2 s2) = alpha, drawn as ifs.sample_svs does.

    ``p`` is the budget still to spend and ``q`` the least the current pair must take so that the remaining
    pairs (3 at most each) can still reach alpha. Returns (n, 2) float64 [s1, s2] per map.
    The published clamp of alpha to [0, 3n] compares instead of assigning (a no-op), so none is applied here;
    sample_system's alpha is always inside.
    """
    s = np.empty((n, 2))
    p = alpha
    q = alpha - 3 * n + 3
    for i in range(n - 1):
        s1 = rng.uniform(max(0, q / 3), min(1, p))
        q -= s1
        p -= s1
        s2 = rng.uniform(max(0, q / 2), min(s1, p / 2))
        q = q - 2 * s2 + 3
        p -= 2 * s2
        s[i, :] = s1, s2
    s2 = rng.uniform(max(0, (p - 1) / 2), p / 3)
    s[-1, :] = p - 2 * s2, s2
    return s


def _num_maps(n, rng: np.random.Generator) -> int:
    # the published accepted forms: None, an int, a range, or a (lo, hi) pair; hi is exclusive throughout
    if n is None:
        return int(rng.integers(*SAMPLE_SYSTEM_DEFAULT_MAPS))
    if isinstance(n, range):
        return int(rng.integers(n.start, n.stop))
    if isinstance(n, (tuple, list)):
        return int(rng.integers(*n))
    return int(n)


def sample_system_parts(rng: np.random.Generator, n=PUBLISHED_NUM_MAPS, beta=None, bval: float = 1.0) -> dict:
    """One system with its SVD factors, consuming ``rng`` exactly as ifs.sample_system(constrain=True).

    n: number of maps or (lo, hi) / range with hi exclusive (default: the published dataset's 2..4).
    beta: (lo, hi) for the sigma-factor, default sigma_factor_bounds(n).
    Returns dict with system (n, 2, 3) [[a, b, e], [c, d, f]] per map, u (n, 2, 2), v (n, 2, 2) orthogonal
    (det +-1: reflections included), s (n, 2) singular values, alpha (float), translations (n, 2).
    """
    n = _num_maps(n, rng)
    if beta is None:
        beta = sigma_factor_bounds(n)
    # random orthogonal factors: a rotation applied to diag(+-1, +-1)
    base = np.sign(rng.random((2 * n, 2, 1)) - 0.5) * np.eye(2)
    angle = rng.uniform(-np.pi, np.pi, 2 * n)
    sin, cos = np.sin(angle), np.cos(angle)
    rot = np.empty((2 * n, 2, 2))
    rot[:, 0, 0] = cos
    rot[:, 0, 1] = -sin
    rot[:, 1, 0] = sin
    rot[:, 1, 1] = cos
    uv = rot @ base
    u, v = uv[:n], uv[n:]
    alpha = rng.uniform(*beta)
    s = sample_singular_values(n, alpha, rng)
    system = np.empty((n, 2, 3))
    system[:, :, :2] = (u * s[:, None, :]) @ v  # scales U's columns: U diag(s) V, same matmul as published
    system[:, :, 2] = rng.uniform(-bval, bval, (n, 2))
    return {"system": system, "u": u, "v": v, "s": s, "alpha": float(alpha), "translations": system[:, :, 2].copy()}


def sample_system(rng: np.random.Generator, n=PUBLISHED_NUM_MAPS, beta=None, bval: float = 1.0) -> np.ndarray:
    """The (n, 2, 3) parameters of one system (see sample_system_parts)."""
    return sample_system_parts(rng, n, beta, bval)["system"]


def probabilities(system: np.ndarray) -> np.ndarray:
    """Map probabilities |det A_i| / sum, (n,) from system (n, 2, 3), with ifs.iterate's float ops.

    The sum is accumulated in order, as numba's ps.sum() does (numpy's reduction adds the first term last).
    """
    det = system[:, 0, 0] * system[:, 1, 1] - system[:, 0, 1] * system[:, 1, 0]
    ps = np.abs(det)
    total = 0.0
    for t in ps:
        total += t
    return ps / total


def fixed_point(system: np.ndarray, index: int = 0) -> np.ndarray:
    """Fixed point (2,) of map ``index``, (I - A)^-1 b, written out as ifs.iterate writes it (index 0 there)."""
    a, b, e = system[index, 0]
    c, d, f = system[index, 1]
    det = a * d - b * c
    s = 1 / (1 + det - a - d)
    return np.array([s * ((1 - d) * e + b * f), s * ((1 - a) * f + c * e)])


def iterate(system: np.ndarray, num_points: int, rng: np.random.RandomState, probs=None) -> np.ndarray:
    """Chaos game as ifs.iterate: (num_points, 2) points after the start (the fixed point of map 0).

    rng: a legacy RandomState, drawn once per step like numba's np.random.rand() (the same MT19937 stream when
    both are seeded with the same integer). Map k is the first with r < cumsum(probs)[k], the last if none.
    On a non-finite point the published loop stops and leaves the rest uninitialised; here the rest is NaN.
    """
    ps = np.cumsum(probabilities(system) if probs is None else np.asarray(probs, float)).tolist()
    coef = [tuple(float(t) for t in row.ravel()) for row in system]  # a, b, e, c, d, f
    out = np.full((num_points, 2), np.nan)
    x, y = (float(t) for t in fixed_point(system))
    last = len(ps) - 1
    for i in range(num_points):
        r = rng.random_sample()
        k = last
        for j, cum in enumerate(ps):
            if r < cum:
                k = j
                break
        a, b, e, c, d, f = coef[k]
        x, y = a * x + b * y + e, c * x + d * y + f
        out[i] = x, y
        if not (np.isfinite(x) and np.isfinite(y)):
            break
    return out


def jitter_system(
    system: np.ndarray,
    rng: np.random.Generator,
    prange: tuple[float, float] = JITTER_RANGE,
    attempts: int = JITTER_ATTEMPTS,
) -> np.ndarray:
    """The published per-image parameter augmentation (IFSGenerator with jitter_params=True); returns a copy.

    Each attempt draws k = rng.integers(0, n) and m = rng.uniform(*prange) and multiplies all six parameters of
    map k (translation included) by m; the attempt is kept unless some map's largest singular value exceeds 1.
    After ``attempts`` rejected attempts the system is returned unchanged. system: (n, 2, 3).
    """
    for _ in range(attempts):
        out = system.copy()
        out[rng.integers(0, len(out))] *= rng.uniform(*prange)
        if np.linalg.svd(out[:, :, :2], compute_uv=False).max() > 1:
            continue
        return out
    return system.copy()

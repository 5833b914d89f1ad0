"""The 3D-OFDB fractal category search, reproducing the published generator bit for bit.

Published generator: ``3d-ofdb-generator/3dfractal_render/category_search.py`` and ``IteratedFunctionSystem.py``
in github.com/ryoo-nakamura/OFDB (commit ea761ecb), run by ``3d-ofdb_render.sh`` with ``--variance=0.05
--numof_classes=1000``. The SIGNATE contest solution (github.com/hiranoko/PIDModuleContest_4thPlaceSolution,
``src/Pytorch3D/src/generator.py``) runs the same search with ``np.random.seed(42)`` and ships its output as a
pickle; ``search_categories(1000, seed=42)`` reproduces every value in it (checked for all 1000).

What the published search does, step by step (one *attempt* per loop turn, all draws from numpy's legacy global
stream, ``np.random.seed(seed)``, which is the same stream as ``np.random.RandomState(seed)``; Python's
``random`` is seeded too but never drawn from):

1. ``m = randint(2, 8)``: 2 to 7 maps.
2. For each map: ``uniform(-1, 1, 12)`` gives ``a..l``; the map is ``x' = [[a,b,c],[d,e,f],[g,h,i]] x + (j,k,l)``.
   Its weight is ``|det|`` of that 3x3 matrix (``np.linalg.det``, whose last bits depend on the LAPACK build
   and, for OpenBLAS, on the CPU kernel it picks: see ``_abs_dets``), summed in map order.
3. Probabilities are the weights divided by their sum; the chaos game selects maps by the running sum of these.
4. Chaos game: ``random(point_num)`` uniforms (all ``point_num`` are drawn, only ``point_num - 1`` are used),
   start at the origin, which is not kept; every step's point is kept (no transient is dropped), so the cloud has
   ``point_num - 1`` points. Step ``t`` applies the first map whose running probability sum is ``>= u_t``.
5. Normalisation: min-max of the whole ``(3, N)`` cloud (one min and one max over all coordinates) to
   ``[-normalize, normalize]``, then each coordinate minus its mean, where the mean is a left-to-right Python
   ``sum`` divided by ``point_num`` (10000), not by the ``point_num - 1`` points there are.
6. Filter: ``np.var`` along each axis must exceed ``variance`` (0.05 in the published run) and the y row must
   hold no NaN. Rejected attempts have already consumed their draws, so the next attempt continues the stream.

The original runs ``point_num`` Python steps per attempt and ~80 attempts per accepted category (1-2 s each).
Here the attempts are drawn in the original order and their chaos games then run side by side, one numpy step
for a whole batch; each coordinate is still the same IEEE operations in the same order (``((x*a + y*b) + z*c) +
j``), so every point is identical. The filter is decided from streaming statistics where they are unambiguous
(``_screen``) and by the published normalise-and-``np.var`` computation otherwise; the batch size never changes
the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

CONTEST_SEED = 42  # the only seed with published output (the contest's params pickle); OFDB's own run is unseeded
PUBLISHED_POINT_NUM = 10000  # --point_num default, kept by 3d-ofdb_render.sh
PUBLISHED_VARIANCE = 0.05  # 3d-ofdb_render.sh passes --variance=0.05 (the argparse default is 0.15)
PUBLISHED_NORMALIZE = 1.0  # --normalize default: clouds span [-1, 1] before centring
# instance.py builds each 3D-OFDB model with the first row of ifs_weight/weights_ins145.csv, which scales the
# coefficient ``a`` of every map by 0.4 (the all-ones row is the 7th). The contest solution uses no weights.
OFDB_INSTANCE_WEIGHT = (0.4,) + (1.0,) * 11
# ifs_weight/weights_ins145.csv (the instances of ExFractal / 3D-OFDB): the factors, as the file's text, that each of
# the 12 coefficients a..l is scaled by in turn; the identity row follows a's 0.9 row. In the published file the
# row of ``i`` (the 9th coefficient) that should scale it by 1.6 scales it by 0.6 again: kept, as published.
_EXFRACTAL_FACTORS = ("0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6")
_EXFRACTAL_QUIRK = (8, 11, "0.6")  # (coefficient i, its 12th factor, the published value)
EXFRACTAL_INSTANCES = 145


def exfractal_weights() -> np.ndarray:
    """The ``(145, 12)`` float64 rows of ``ifs_weight/weights_ins145.csv`` in file order (``float()`` of its text,
    as ``instance.py`` reads it): a times 0.4, ..., 0.9, the identity row, a times 1.1, ..., 1.6, then b..l each
    times the same 12 factors. Row 0 is :data:`OFDB_INSTANCE_WEIGHT`, the row 3D-OFDB's released models use."""
    rows = []
    for coefficient in range(12):
        for j, text in enumerate(_EXFRACTAL_FACTORS):
            if coefficient == 0 and j == 6:
                rows.append(np.ones(12))
            if (coefficient, j) == _EXFRACTAL_QUIRK[:2]:
                text = _EXFRACTAL_QUIRK[2]
            row = np.ones(12)
            row[coefficient] = float(text)
            rows.append(row)
    return np.asarray(rows)


_MAX_BATCH = 2048  # attempts drawn and screened together: 20 MB of map choices, 2 x 12 MB chunk buffers
_EXACT_BATCH = 64  # attempts whose whole trajectories are kept for the exact filter: (10^4, 3, 64) = 15 MB
_STEP_CHUNK = 256  # chaos-game steps between statistics updates
_DRAW_GROUP = 256  # attempts whose uniforms (80 kB each) are held at once before they become map choices
SCREEN_MARGIN = 1e-9  # |estimated - threshold| below this: decided by the exact published computation


@dataclass(frozen=True)
class IFSSystem:
    """One fractal category: an iterated function system of ``m`` affine maps.

    Attributes:
        affine: ``(m, 3, 4)`` float64; map ``k`` sends ``x`` to ``affine[k, :, :3] @ x + affine[k, :, 3]``.
            In the published CSV column order ``a..l`` this is ``[[a, b, c, j], [d, e, f, k], [g, h, i, l]]``.
        probs: ``(m,)`` float64 map probabilities (``|det A|`` normalised to sum 1, as published).
    """

    affine: np.ndarray
    probs: np.ndarray

    @property
    def num_maps(self) -> int:
        return int(self.probs.shape[0])

    def to_params13(self) -> np.ndarray:
        """``(m, 13)`` float64 in the published row layout ``a, b, c, d, e, f, g, h, i, j, k, l, prob``."""
        out = np.empty((self.num_maps, 13), dtype=np.float64)
        out[:, :9] = self.affine[:, :, :3].reshape(-1, 9)
        out[:, 9:12] = self.affine[:, :, 3]
        out[:, 12] = self.probs
        return out

    @classmethod
    def from_params13(cls, params: np.ndarray) -> IFSSystem:
        """Inverse of ``to_params13``: ``(m, 13)`` rows ``a..l, prob`` to a system (values copied exactly)."""
        params = np.asarray(params, dtype=np.float64)
        if params.ndim != 2 or params.shape[1] != 13:
            raise ValueError(f"expected (maps, 13) parameters, got shape {params.shape}")
        affine = np.empty((params.shape[0], 3, 4), dtype=np.float64)
        affine[:, :, :3] = params[:, :9].reshape(-1, 3, 3)
        affine[:, :, 3] = params[:, 9:12]
        return cls(affine=affine, probs=params[:, 12].copy())

    def __eq__(self, other: object) -> bool:
        # exact equality of every float64 value (and shapes): the point of this module is bit-exactness
        if not isinstance(other, IFSSystem):
            return NotImplemented
        return bool(np.array_equal(self.affine, other.affine) and np.array_equal(self.probs, other.probs))

    __hash__ = None  # mutable arrays inside: not hashable


def _running_sums(probs: np.ndarray) -> np.ndarray:
    """The published map-selection thresholds: a left-to-right running float sum of the probabilities."""
    out = np.empty_like(probs)
    total = 0.0
    for k, p in enumerate(probs.tolist()):
        total += p
        out[k] = total
    return out


def _select_maps(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Map chosen at each chaos-game step, ``(len(uniforms),)`` int8.

    Published: the first map ``k`` with ``u <= running_sum[k]``. The running sums do not decrease, so that is
    the number of sums strictly below ``u`` (``searchsorted(side="left")``, but counting with one comparison
    per map is ~5x faster than a binary search on random data). A ``u`` above the last running sum (it can end
    a few ulps short of 1) selects no map and gets index ``m``.
    """
    chosen = np.zeros(uniforms.shape, dtype=np.int8)
    below = np.empty(uniforms.shape, dtype=bool)
    for threshold in _running_sums(probs).tolist():
        np.greater(uniforms, threshold, out=below)
        chosen += below.view(np.int8)
    return chosen


@dataclass
class _Draws:
    """The random draws of consecutive search attempts, in the published order, ready for the chaos game."""

    coefs: list[np.ndarray]  # per attempt (m, 12) float64 a..l as drawn
    probs: list[np.ndarray]  # per attempt (m,) float64
    chosen: np.ndarray  # (attempts, point_num - 1) int8 map index per step


LAPACK_FLAVOURS = ("mkl", "openblas")  # the config choices (bank.ofdb.lapack); see _abs_dets
_ALL_FLAVOURS = LAPACK_FLAVOURS + ("openblas_fma", "numpy")


def _fma(x: float, y: float, z: float) -> float:
    """``x * y + z`` rounded once (IEEE fused multiply-add), for finite operands: exact rational arithmetic, then
    one correctly rounded conversion (``int / int`` rounds correctly). Python 3.13's ``math.fma`` when present."""
    if _MATH_FMA is not None:
        return _MATH_FMA(x, y, z)
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        return x * y + z  # only singular or diverging maps get here; their det is 0 or not finite either way
    return float(Fraction(x) * Fraction(y) + Fraction(z))


_MATH_FMA = getattr(math, "fma", None)


def _abs_dets(mats: np.ndarray, lapack: str) -> np.ndarray:
    """``|np.linalg.det|`` of ``(M, 3, 3)`` float64 matrices, as a given LAPACK build computes it.

    numpy's ``det`` factorises with LAPACK ``getrf`` (partial pivoting, multipliers scaled by the reciprocal of
    the pivot) and returns ``sign * exp(sum(log|u_ii|))``. For a 3x3 matrix only the last pivot ``u22`` depends
    on the library's summation order; three orders exist, each emulated exactly here:

    * ``"mkl"``: right-looking (reference LAPACK ``dgetrf2``): ``u22 = (a22 - l20*u02) - l21*u12``. Matches the
      contest's conda numpy 1.23.5 + MKL 2023.1 on all 2,375 maps of its published parameter file (1000
      categories). OpenBLAS rounds this way too with its Sandybridge kernels (also loaded for Bulldozer,
      Piledriver, Excavator), whose ``dgemv`` subtracts column by column: numpy 2.4.6 (OpenBLAS 0.3.31) under
      ``OPENBLAS_CORETYPE=Sandybridge`` equals this flavour on all 2,375 maps.
    * ``"openblas"``: OpenBLAS's left-looking ``getf2`` with the ``dgemv_n_4.c`` kernel built without FMA (the
      Haswell, Zen and Nehalem kernels; the Core2/Prescott/Atom/Barcelona fallbacks round the same):
      ``u22 = a22 - (l20*u02 + l21*u12)``. Matches OFDB's ``category_search.py`` output under numpy 1.22.0 and
      2.4.6 wheels (``tests/fixtures/ofdb/``), and numpy 2.4.6's ``det`` with each of those kernels on all 2,375
      maps; it differs from ``"mkl"`` on 383 of them.
    * ``"openblas_fma"`` (not offered as ``bank.ofdb.lapack``): the same kernel built with
      ``-march=skylake-avx512``, where GCC contracts its ``temp += a * x`` into a fused multiply-add: the
      SkylakeX, Cooperlake and SapphireRapids kernels that OpenBLAS loads on AVX-512 CPUs (Intel Xeon since
      Skylake-SP, AMD Zen 4 and later): ``u22 = a22 - fma(l21, u12, l20*u02)``. Derived from OpenBLAS's source
      and not run on such a CPU here (none was available); it differs from ``"openblas"`` on 201 of the 2,375
      maps, the count that numpy's ``det`` was reported to differ by (issue 23). Slow (exact rationals per map).
    * ``"numpy"``: whatever ``np.linalg.det`` of this installation gives.

    Which of these a pip numpy's ``det`` gives depends on the CPU (OpenBLAS picks its kernel at run time, and
    ``OPENBLAS_CORETYPE`` overrides the pick), so no single flavour reproduces OFDB's script on every machine.

    ``log`` and ``exp`` are the C library's (``math``), as in numpy's ``det``; numpy's own vectorised ``np.log``
    and ``np.exp`` may differ in the last bit.
    """
    if lapack == "numpy":
        return np.abs(np.linalg.det(mats))
    if lapack not in _ALL_FLAVOURS:
        raise ValueError(f"lapack must be one of {', '.join(map(repr, _ALL_FLAVOURS))}, got {lapack!r}")
    a = np.array(mats, dtype=np.float64)  # a copy, factorised in place
    rows = np.arange(a.shape[0])

    def pivot(k: int) -> None:
        # first row of maximal |a_ik| (BLAS idamax) swapped into row k, whole rows as LAPACK's laswp does
        p = k + np.argmax(np.abs(a[:, k:, k]), axis=1)
        moved = a[rows, p].copy()
        a[rows, p] = a[rows, k]
        a[rows, k] = moved

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # singular maps: det 0 below
        pivot(0)
        a[:, 1:, 0] *= (1.0 / a[:, 0, 0])[:, None]
        if lapack == "mkl":
            a[:, 1:, 1:] -= a[:, 1:, 0:1] * a[:, 0:1, 1:]  # rank-1 update of the trailing 2x2
            pivot(1)
            a[:, 2, 1] *= 1.0 / a[:, 1, 1]
            a[:, 2, 2] -= a[:, 2, 1] * a[:, 1, 2]
        else:
            a[:, 1:, 1] -= a[:, 1:, 0] * a[:, 0:1, 1]  # column 1: u01 is a01; subtract l_i0 * u01
            pivot(1)
            a[:, 2, 1] *= 1.0 / a[:, 1, 1]
            a[:, 1, 2] -= a[:, 1, 0] * a[:, 0, 2]  # column 2: u12 by forward substitution
            if lapack == "openblas":
                a[:, 2, 2] -= a[:, 2, 0] * a[:, 0, 2] + a[:, 2, 1] * a[:, 1, 2]  # dot product first, then subtract
            else:  # dgemv_n_4.c's m == 1 tail: temp = 0 + l20*u02; temp = fma(l21, u12, temp); y += -1 * temp
                first = (a[:, 2, 0] * a[:, 0, 2]).tolist()
                dots = [_fma(x, y, z) for x, y, z in zip(a[:, 2, 1].tolist(), a[:, 1, 2].tolist(), first)]
                a[:, 2, 2] -= np.array(dots, dtype=np.float64).reshape(-1)
    diag = a[:, [0, 1, 2], [0, 1, 2]].tolist()
    out = np.empty(a.shape[0], dtype=np.float64)
    for r, (u0, u1, u2) in enumerate(diag):
        if u0 == 0.0 or u1 == 0.0 or u2 == 0.0:
            out[r] = 0.0  # getrf reports a zero pivot; numpy's det is then 0
        else:
            out[r] = math.exp(math.log(abs(u0)) + math.log(abs(u1)) + math.log(abs(u2)))
    return out


def _draw_attempts(rs: np.random.RandomState, count: int, point_num: int, lapack: str) -> _Draws:
    """Make ``count`` published attempts' draws: ``randint(2, 8)``, ``uniform(-1, 1, 12)`` per map, then
    ``random(point_num)`` for the chaos game, attempt after attempt from the one legacy stream."""
    coefs: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    chosen = np.empty((count, point_num - 1), dtype=np.int8)
    for g0 in range(0, count, _DRAW_GROUP):
        group = range(g0, min(g0 + _DRAW_GROUP, count))
        uniforms = []
        for _ in group:
            m = int(rs.randint(2, 8))
            c = np.empty((m, 12), dtype=np.float64)
            for k in range(m):
                c[k] = rs.uniform(-1.0, 1.0, 12)
            coefs.append(c)
            uniforms.append(rs.random_sample(point_num))
        # |det| of the group's maps at once: it draws nothing, so it can wait until the group is drawn
        dets = _abs_dets(np.concatenate(coefs[g0:])[:, :9].reshape(-1, 3, 3), lapack)
        start = 0
        for s, u in zip(group, uniforms):
            w = dets[start:start + coefs[s].shape[0]]
            start += coefs[s].shape[0]
            sum_proba = 0.0
            for v in w.tolist():
                sum_proba += v  # left-to-right float sum, as published
            p = w / sum_proba
            probs.append(p)
            chosen[s] = _select_maps(p, u[: point_num - 1])  # the last uniform is drawn, never used
    return _Draws(coefs=coefs, probs=probs, chosen=chosen)


def _chaos_chunks(coefs: list[np.ndarray], chosen: np.ndarray, out: np.ndarray | None = None):
    """Run the published chaos game for several systems side by side, ``_STEP_CHUNK`` steps at a time.

    Args:
        coefs: per system ``(m_s, 12)`` float64 ``a..l`` (weights already applied).
        chosen: ``(S, steps)`` int8 map index per step (``m_s`` = no map selected).
        out: optional ``(steps, 3, S)`` float64 to fill with the whole trajectory.

    Yields:
        ``(t0, buf)``: ``buf`` is ``(L, 3, S)`` float64, the raw points of steps ``t0 .. t0 + L - 1`` (a reused
        buffer unless ``out`` is given). The origin start is not a point, as published.
    """
    num_sys, steps = chosen.shape
    counts = np.array([c.shape[0] for c in coefs], dtype=np.intp)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    # table row = one map as (a, d, g, b, e, h, c, f, i, j, k, l): one contiguous 96-byte row per system and
    # step is gathered, and viewed as (4, 3) its rows multiply x, y, z and add the offset, its columns are the
    # output coordinate, so one numpy op forms all nine products of every system
    table = np.ascontiguousarray(np.concatenate(coefs)[:, [0, 3, 6, 1, 4, 7, 2, 5, 8, 9, 10, 11]])
    rows = np.empty((num_sys, 12), dtype=np.float64)
    g = rows.T.reshape(4, 3, num_sys)  # a view: g[i, j, s] multiplies input i into output j of system s
    prod = np.empty((3, 3, num_sys), dtype=np.float64)
    prev = np.zeros((3, num_sys), dtype=np.float64)  # published start: the origin
    chunk_buf = None if out is not None else np.empty((min(_STEP_CHUNK, steps), 3, num_sys), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # diverging systems overflow; the filter rejects them
        for t0 in range(0, steps, _STEP_CHUNK):
            t1 = min(t0 + _STEP_CHUNK, steps)
            sel = chosen[:, t0:t1].astype(np.intp)
            # no map selected: the published loop keeps its previous next_* values, i.e. repeats the point (on
            # the very first step those do not exist yet and it crashes)
            stuck = sel >= counts[:, None]
            if t0 == 0 and stuck[:, 0].any():
                raise RuntimeError("no map selected on the first chaos-game step; the published generator crashes")
            any_stuck = stuck.any(axis=0)
            flat = (np.minimum(sel, counts[:, None] - 1) + offsets[:, None]).T.copy()  # (L, S)
            buf = out[t0:t1] if out is not None else chunk_buf[: t1 - t0]
            for t in range(t1 - t0):
                np.take(table, flat[t], axis=0, out=rows)
                nxt = buf[t]
                np.multiply(g[:3], prev[:, None, :], out=prod)  # x*a, y*b, z*c (for every output row)
                np.add(prod[0], prod[1], out=nxt)
                np.add(nxt, prod[2], out=nxt)
                np.add(nxt, g[3], out=nxt)  # the published ((x*a + y*b) + z*c) + j, each op rounded, none fused
                if any_stuck[t]:
                    np.copyto(nxt, prev, where=stuck[:, t])
                prev = nxt
            yield t0, buf
            if out is None:
                prev = prev.copy()  # the chunk buffer is about to be overwritten


def _chaos_trajectory(coefs: list[np.ndarray], chosen: np.ndarray) -> np.ndarray:
    """Whole raw trajectories, ``(steps, 3, S)`` float64."""
    out = np.empty((chosen.shape[1], 3, chosen.shape[0]), dtype=np.float64)
    for _ in _chaos_chunks(coefs, chosen, out=out):
        pass
    return out


def normalize_published(raw: np.ndarray, point_num: int = PUBLISHED_POINT_NUM,
                        normalize: float = PUBLISHED_NORMALIZE) -> np.ndarray:
    """The published ``min_max`` then ``centoroid`` of one cloud.

    Args:
        raw: ``(3, N)`` float64 raw chaos-game points (coordinate-major, as the published code holds them).
        point_num: the divisor of the centroid sums (published: the requested point count, ``N + 1``).
        normalize: half-width of the min-max target interval.

    Returns:
        ``(3, N)`` float64, min-max scaled over all coordinates together, then each coordinate's mean removed.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        lo = raw.min()
        hi = raw.max()
        scaled = ((raw - lo) / (hi - lo)) * (normalize - (-normalize)) - normalize
        # Python's sum() adds left to right starting from int 0; a running (prefix) sum has the same rounding.
        # (0 + v == v except for v == -0.0, which the min-max above never produces: it ends in "- normalize".)
        centre = np.add.accumulate(scaled, axis=1)[:, -1] / point_num
        return scaled - centre[:, None]


def _accepted_exactly(raw: np.ndarray, point_num: int, normalize: float, variance: float) -> bool:
    """The published filter on one raw ``(3, N)`` cloud: normalise, then ``np.var`` per axis, NaN check on y."""
    point = normalize_published(raw, point_num, normalize)
    with np.errstate(invalid="ignore", over="ignore"):
        var = np.var(point, axis=1)
    # published: only the y row is checked for NaN; a NaN elsewhere fails the variance test anyway
    return bool(not np.isnan(point[1]).any() and var[0] > variance and var[1] > variance and var[2] > variance)


def _screen(coefs: list[np.ndarray], chosen: np.ndarray, normalize: float, variance: float,
            margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Decide most attempts from streaming statistics, without keeping their trajectories.

    The published filter needs the whole 9999-point cloud of every attempt, and ~99% of attempts fail it. Here
    each batch runs once, keeping per system the exact per-axis min and max and a float64 estimate of the
    per-axis variance (chunk-wise two-pass sums merged with Chan's formula, on values scaled by a power of two
    so that diverging systems do not overflow). Min-max normalisation multiplies the variance by
    ``(2 * normalize / (max - min))**2`` and centring does not change it, so this estimates the published
    variance to ~1e-12 absolute; attempts within ``margin`` of the threshold go to the exact computation.
    A non-finite point means the published normalisation yields NaN in that axis (or a zero-variance axis):
    always rejected.

    Returns:
        ``(accept, unsure)`` boolean ``(S,)`` arrays; the rest are rejected.
    """
    num_sys, steps = chosen.shape
    if math.isinf(margin):  # every attempt decided the published way (slow; for checking this screen)
        return np.zeros(num_sys, dtype=bool), np.ones(num_sys, dtype=bool)
    lo = np.full((3, num_sys), np.inf)
    hi = np.full((3, num_sys), -np.inf)
    bad = np.zeros(num_sys, dtype=bool)
    exp = np.full(num_sys, -1100, dtype=np.int64)  # stats are held in units of 2**exp
    mean = np.zeros((3, num_sys))
    m2 = np.zeros((3, num_sys))
    n = 0
    work = np.empty((min(_STEP_CHUNK, steps), 3, num_sys))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for _, buf in _chaos_chunks(coefs, chosen):
            length = buf.shape[0]
            scaled = work[:length]
            cmin = buf.min(axis=0)
            cmax = buf.max(axis=0)
            bad |= ~(np.isfinite(cmin).all(axis=0) & np.isfinite(cmax).all(axis=0))
            np.minimum(lo, cmin, out=lo)
            np.maximum(hi, cmax, out=hi)
            amax = np.maximum(np.abs(cmin), np.abs(cmax)).max(axis=0)
            amax[bad] = 1.0
            new_exp = np.maximum(exp, np.frexp(amax)[1])
            np.multiply(buf, np.ldexp(1.0, -new_exp), out=scaled)  # exact scaling by a power of two
            cmean = scaled.mean(axis=0)
            np.subtract(scaled, cmean, out=scaled)
            np.square(scaled, out=scaled)
            cm2 = scaled.sum(axis=0)
            shrink = np.ldexp(1.0, exp - new_exp)  # old stats into the new units
            mean *= shrink
            m2 *= shrink * shrink
            delta = cmean - mean
            total = n + length
            mean += delta * (length / total)
            m2 += cm2 + delta * delta * (n * length / total)
            n, exp = total, new_exp
        unit = np.ldexp(1.0, -exp)
        raw_range = hi.max(axis=0) - lo.min(axis=0)  # inf when the published max - min overflows
        span = hi.max(axis=0) * unit - lo.min(axis=0) * unit
        est = (m2 / n) * (2.0 * normalize / span) ** 2  # (3, S)
    certain = ~bad & np.isfinite(raw_range) & (raw_range > 0) & np.isfinite(est).all(axis=0)
    accept = certain & (est > variance + margin).all(axis=0)
    reject = bad | (certain & (est < variance - margin).any(axis=0))
    return accept, ~(accept | reject)


def search_categories(
    num_classes: int,
    seed: int | None = CONTEST_SEED,
    *,
    variance: float = PUBLISHED_VARIANCE,
    point_num: int = PUBLISHED_POINT_NUM,
    normalize: float = PUBLISHED_NORMALIZE,
    lapack: str = "mkl",
    batch_size: int | None = None,
    screen_margin: float = SCREEN_MARGIN,
    max_attempts: int | None = None,
    return_attempts: bool = False,
) -> list[IFSSystem] | tuple[list[IFSSystem], int]:
    """The published 3D-OFDB category search.

    Args:
        num_classes: how many categories to accept.
        seed: seeds numpy's legacy generator (``np.random.seed``); 42 reproduces the contest's published
            parameter file. ``None`` seeds from the OS, which is what OFDB's own script does by default.
        variance: per-axis variance threshold of the normalised cloud (strictly greater passes).
        point_num: uniforms drawn per attempt (the cloud has ``point_num - 1`` points).
        normalize: half-width of the min-max interval.
        lapack: whose ``np.linalg.det`` rounding gives the map probabilities (see ``_abs_dets``): ``"mkl"``
            reproduces the contest's published file, ``"openblas"`` OFDB's script under a pip numpy whose
            OpenBLAS runs a non-AVX-512 kernel other than Sandybridge (which rounds as ``"mkl"``). With seed 42
            they differ in the last bits of ``prob`` for 323 of the 1000 categories; the maps are the same.
        batch_size: attempts drawn and run together; only speed and memory depend on it, never the result.
        screen_margin: attempts whose estimated variance is this close to the threshold are decided by the exact
            published computation; ``math.inf`` decides every attempt that way (slower; to check the screen).
        max_attempts: give up (``RuntimeError``) after this many attempts; ``None`` searches on, as published
            (settings that nothing passes, e.g. a variance above ~0.3, then never finish).
        return_attempts: also return how many attempts were made up to and including the last accepted one.

    Returns:
        ``num_classes`` systems in acceptance order (category ``i`` is the published ``%06d.csv`` file ``i``),
        and the attempt count if ``return_attempts``.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if point_num < 2:
        raise ValueError(f"point_num must be >= 2 (the cloud has point_num - 1 points), got {point_num}")
    rs = np.random.RandomState(seed)
    systems: list[IFSSystem] = []
    attempts_used = 0
    rate = 0.0125  # acceptance rate at the published settings (1000 categories from 80201 attempts), then observed
    while len(systems) < num_classes:
        if max_attempts is not None and attempts_used >= max_attempts:
            raise RuntimeError(f"{len(systems)} of {num_classes} categories after {attempts_used} attempts "
                               f"(max_attempts); lower variance={variance} or raise max_attempts")
        need = num_classes - len(systems)
        size = batch_size or max(16, min(_MAX_BATCH, math.ceil(1.5 * need / rate)))
        if max_attempts is not None:
            size = min(size, max_attempts - attempts_used)
        draws = _draw_attempts(rs, size, point_num, lapack)
        accept, unsure = _screen(draws.coefs, draws.chosen, normalize, variance, screen_margin)
        for start in range(0, size, _EXACT_BATCH):  # the few near the threshold: whole clouds, published filter
            idx = np.flatnonzero(unsure[start:start + _EXACT_BATCH]) + start
            if idx.size:
                traj = _chaos_trajectory([draws.coefs[i] for i in idx], draws.chosen[idx])
                for j, i in enumerate(idx):
                    accept[i] = _accepted_exactly(np.ascontiguousarray(traj[:, :, j].T), point_num, normalize,
                                                  variance)
        for s in range(size):
            attempts_used += 1
            if accept[s]:
                params = np.concatenate([draws.coefs[s], draws.probs[s][:, None]], axis=1)
                systems.append(IFSSystem.from_params13(params))
                if len(systems) == num_classes:
                    break  # the published loop stops here; the rest of this batch's draws are never made there
        rate = max(len(systems) / attempts_used, 1e-3)
    return (systems, attempts_used) if return_attempts else systems


def point_cloud(
    system: IFSSystem,
    rng: np.random.RandomState | int | None,
    *,
    point_num: int = PUBLISHED_POINT_NUM,
    normalize: float = PUBLISHED_NORMALIZE,
    weight: tuple[float, ...] | None = None,
    raw: bool = False,
) -> np.ndarray:
    """One category's point cloud, made the published way.

    Draws ``point_num`` uniforms from ``rng`` (a legacy ``RandomState``, or a seed for one), runs the chaos game
    from the origin and (unless ``raw``) applies the published min-max and centring. Calling it for categories
    0, 1, ... with one ``RandomState(42)`` reproduces the contest's clouds; OFDB's ``instance.py`` additionally
    passes ``weight=OFDB_INSTANCE_WEIGHT`` (and draws from an unseeded global stream).

    Args:
        system: the category.
        rng: source of the map-selection uniforms; advanced by exactly ``point_num`` draws.
        point_num: uniforms drawn; the cloud has ``point_num - 1`` points.
        normalize: half-width of the min-max interval.
        weight: 12 factors multiplying ``a..l`` of every map before the game (``instance.py``'s weights row).
        raw: return the chaos-game points without normalisation.

    Returns:
        ``(point_num - 1, 3)`` float64, C-contiguous.
    """
    if point_num < 2:
        raise ValueError(f"point_num must be >= 2 (the cloud has point_num - 1 points), got {point_num}")
    if not isinstance(rng, np.random.RandomState):
        rng = np.random.RandomState(rng)
    coefs = system.to_params13()[:, :12]
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != (12,):
            raise ValueError(f"weight must hold 12 factors (a..l), got shape {w.shape}")
        coefs = coefs * w  # published: a *= weight_a, ... one multiplication per coefficient
    uniforms = rng.random_sample(point_num)
    chosen = _select_maps(system.probs, uniforms[: point_num - 1])[None]
    cloud = np.ascontiguousarray(_chaos_trajectory([coefs], chosen)[:, :, 0].T)
    if not raw:
        cloud = normalize_published(cloud, point_num, normalize)
    return np.ascontiguousarray(cloud.T)


def point_clouds(
    systems: list[IFSSystem],
    rng: np.random.RandomState | int | None,
    *,
    point_num: int = PUBLISHED_POINT_NUM,
    normalize: float = PUBLISHED_NORMALIZE,
    weight: tuple[float, ...] | None = None,
    group: int = 256,
) -> np.ndarray:
    """``point_cloud`` for every system in turn from one stream, the chaos games run ``group`` at a time.

    Equal, value for value, to ``[point_cloud(s, rng, ...) for s in systems]`` (a legacy ``RandomState`` fills an
    array of draws in the order of as many single calls). Returns ``(S, point_num - 1, 3)`` float64.
    """
    if point_num < 2:
        raise ValueError(f"point_num must be >= 2 (the cloud has point_num - 1 points), got {point_num}")
    if not isinstance(rng, np.random.RandomState):
        rng = np.random.RandomState(rng)
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    if w is not None and w.shape != (12,):
        raise ValueError(f"weight must hold 12 factors (a..l), got shape {w.shape}")
    uniforms = rng.random_sample((len(systems), point_num))
    out = np.empty((len(systems), point_num - 1, 3), dtype=np.float64)
    for start in range(0, len(systems), group):
        members = systems[start:start + group]
        coefs = [s.to_params13()[:, :12] * w if w is not None else s.to_params13()[:, :12] for s in members]
        chosen = np.stack([_select_maps(s.probs, uniforms[start + i, :point_num - 1])
                           for i, s in enumerate(members)])
        trajectories = _chaos_trajectory(coefs, chosen)  # (steps, 3, G)
        for i in range(len(members)):
            cloud = normalize_published(np.ascontiguousarray(trajectories[:, :, i].T), point_num, normalize)
            out[start + i] = cloud.T
    return out

"""FractalDB (Kataoka et al., ACCV 2020): category search and instance recipe, reproducing the published code.

Reference: github.com/hirokatsukataoka16/FractalDB-Pretrained-ResNet-PyTorch at commit
1b8fb9fe7a6f496d4a2acc4ae5e1c1ab1eab0608, files ``param_search/ifs_search.py``, ``param_search/ifs_simple.py``,
``fractal_renderer/make_fractaldb.py``, ``fractal_renderer/ifs_function.py``, ``fractal_renderer/weights/*.csv``
and ``exe.sh``. Everything here is written anew from reading that code; what it does:

Category search (``ifs_search.py`` with ``--rate 0.2 --category 1000 --numof_point 100000``):

* One legacy NumPy generator (the global ``RandomState``, MT19937) seeded once with ``np.random.seed(1)``.
* Per candidate system, in this order: ``randint(2, 8)`` maps (upper bound exclusive: 2..7 maps, not the
  paper's 2..8; the shipped 1,000 CSVs hold 2 to 7 rows), then per map ``uniform(-1, 1, 6)`` giving
  ``a, b, c, d, e, f`` of ``x' = a x + b y + e, y' = c x + d y + f``, then ``random(100000)`` for the chaos game.
* Map probability ``|a d - b c|`` divided by the sum over the maps (sum accumulated map by map).
* Chaos game: start at (0, 0), which is kept as the first of the 100,000 points (no transient is dropped);
  step ``i`` takes the first map whose running sum of probabilities is ``>= r_i`` (none, through rounding: the
  previous point is appended again); the last uniform is unused.
* Diverging systems: rows from 100 before the first NaN on are deleted before rescaling (x, then y).
* Filling rate: points shifted to a zero minimum (only if the minimum is negative), scaled by
  ``500 / (max - min)``, offset by the 6 px pad, truncated to ``uint16`` and marked on a 512 x 512 image;
  rate = marked pixels / 512**2. Accepted when ``rate >= 0.2``; rejected candidates simply consumed their draws
  (there is no reseeding), so the stream of candidates does not depend on which are accepted.
* Accepted parameters are written with ``np.savetxt(..., delimiter=',')`` (``%.18e``), columns a..f, p.

Instances (``make_fractaldb.py`` as run by ``exe.sh``: ``--weight_csv weights_0.4.csv``, default ``--instance 10``,
``--draw_type patch_gray``, 362 px, 200,000 points): each of the 25 rows of the weight file multiplies one of
the six parameters of *every* map (row order: a by 0.2, 0.6, then the identity row, a by 1.4, 1.8, then b, c, d,
e, f by 0.2, 0.6, 1.4, 1.8); probabilities are the category's, not recomputed. Its chaos game reseeds the global
generator with ``np.random.seed(100)`` for every image, so all instances share one map-selection sequence; the
10 draws per weight row differ only in the 3 x 3 patch masks (Python ``random``, unseeded), and each is saved
with 4 flips: 25 x 10 x 4 = 1,000 images per category.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

PUBLISHED_SEED = 1  # np.random.seed(1) in ifs_search.py
MIN_MAPS = 2
MAX_MAPS_EXCLUSIVE = 8  # np.random.randint(2, 8): high is exclusive, so at most 7 maps
NUM_POINTS = 100_000  # --numof_point
IMAGE_SIZE = 512  # draw_point(512, 512, 6, 6, ...) in ifs_search.generator
PAD = 6
FILL_THRESHOLD = 0.2  # --rate; accepted when rate >= threshold
INSTANCE_SEED = 100  # ifs_function.calculate reseeds np.random with 100 for every rendered image
INSTANCE_NUM_POINTS = 200_000  # exe.sh numof_ite
INSTANCE_IMAGE_SIZE = 362  # exe.sh imagesize
INSTANCE_DRAWS_PER_ROW = 10  # make_fractaldb.py --instance default: patch-mask draws per weight row
INSTANCE_FLIPS = 4  # draw_patch saves flips 0..3 of every image
PUBLISHED_WEIGHT = "0.4"  # exe.sh weight=0.4 -> fractal_renderer/weights/weights_0.4.csv

# The four non-identity factors of each published weight file, as the text in the file (float() of that text is
# what make_fractaldb.py multiplies by). Every file is 25 rows laid out the same way (see instance_weights), except
# that the last value of each file is followed by no newline and the rows end in CRLF; weights_0.5 uses 0.01, not 0.
_WEIGHT_FACTORS = {
    "0.0125": ("0.975", "0.9875", "1.0125", "1.025"),
    "0.025": ("0.95", "0.975", "1.025", "1.05"),
    "0.05": ("0.9", "0.95", "1.05", "1.1"),
    "0.1": ("0.8", "0.9", "1.1", "1.2"),
    "0.2": ("0.6", "0.8", "1.2", "1.4"),
    "0.3": ("0.4", "0.7", "1.3", "1.6"),
    "0.4": ("0.2", "0.6", "1.4", "1.8"),
    "0.5": ("0.01", "0.5", "1.5", "2"),
}


@dataclass(frozen=True)
class Category:
    """One accepted FractalDB category.

    params: (maps, 6) float64, columns a, b, c, d, e, f.
    probs: (maps,) float64, |ad - bc| / sum, as written in the CSV's 7th column.
    candidate: index of the candidate system in the random stream that produced it (0-based, counting rejects).
    fill: its filling rate.
    """

    params: np.ndarray
    probs: np.ndarray
    candidate: int
    fill: float

    def csv_text(self) -> str:
        """The category's CSV exactly as ``np.savetxt(path, params7, delimiter=',')`` writes it."""
        rows = np.concatenate([self.params, self.probs[:, None]], axis=1)
        return "".join(",".join(f"{v:.18e}" for v in row) + "\n" for row in rows)


def draw_candidate(rng: np.random.RandomState, num_points: int = NUM_POINTS):
    """Draw one candidate system from the legacy generator, consuming the stream as ifs_search.py does.

    Returns (params (maps, 6) float64, probs (maps,) float64, uniforms (num_points,) float64).
    """
    n = int(rng.randint(MIN_MAPS, MAX_MAPS_EXCLUSIVE))
    params = np.empty((n, 6))
    for i in range(n):  # one uniform(-1, 1, 6) call per map, as published (same stream as a single call)
        params[i] = rng.uniform(-1.0, 1.0, 6)
    a, b, c, d = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
    dets = np.abs(a * d - b * c)
    total = 0.0
    for v in dets:  # the published sum is accumulated map by map
        total += v
    probs = dets / total
    uniforms = rng.random_sample(num_points)
    return params, probs, uniforms


def _cumulative(probs: np.ndarray) -> np.ndarray:
    """Running sum of probabilities, accumulated in Python floats from 0.0 like ifs_simple.set_param."""
    out, total = [], 0.0
    for p in probs:
        total += float(p)
        out.append(total)
    return np.asarray(out)


def _iterate_scalar(params: np.ndarray, probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The published chaos game, one step at a time: (len(uniforms), 2) points from (0, 0)."""
    cum = _cumulative(probs)
    sel = np.searchsorted(cum, uniforms[:-1], side="left").tolist()  # first j with u <= cum[j]
    coef = [tuple(float(v) for v in row) for row in params]
    n = len(coef)
    xs = [0.0] * len(uniforms)
    ys = [0.0] * len(uniforms)
    x = y = 0.0
    for i, j in enumerate(sel, start=1):
        if j < n:
            a, b, c, d, e, f = coef[j]
            x, y = x * a + y * b + e, x * c + y * d + f
        elif i == 1:
            # The published loop leaves next_x unbound here and raises; never happened in the published run.
            raise RuntimeError("uniform above the last cumulative probability at the first step")
        # else: no map selected, so the published code appends the previous point again
        xs[i] = x
        ys[i] = y
    return np.stack([np.asarray(xs), np.asarray(ys)], axis=1)


def chaos_game_2d(params: np.ndarray, probs: np.ndarray, num_points: int, rng: np.random.RandomState) -> np.ndarray:
    """Chaos game the published way.

    params: (maps, 6) a..f; probs: (maps,) summing to ~1; rng: legacy RandomState, of which exactly
    ``num_points`` uniforms are drawn (the last one unused, as published). Returns (num_points, 2) float64 points,
    the first being the start (0, 0). For FractalDB's rendered instances pass ``np.random.RandomState(100)``.
    """
    return _iterate_scalar(np.asarray(params, float), np.asarray(probs, float), rng.random_sample(num_points))


def _drop_nan_tail(xs: np.ndarray, ys: np.ndarray, key: np.ndarray):
    """ifs_simple's NaN handling: delete every NaN row of ``key`` and the 100 rows before the first one."""
    nan_idx = np.flatnonzero(np.isnan(key))
    first = int(nan_idx[0])
    if first < 100:
        # The published code would delete negative indices here (numpy-version dependent) and then fail on an
        # empty array; it cannot happen for |coefficients| < 1, which need ~1000 steps to overflow.
        raise RuntimeError("NaN within the first 100 points: the published search would fail here")
    rows = np.append(np.arange(first - 100, first), nan_idx)
    return np.delete(xs, rows), np.delete(ys, rows)


def pixel_coords(points: np.ndarray, image_size: int = IMAGE_SIZE, pad: int = PAD) -> np.ndarray:
    """The published point-to-pixel mapping (ifs_simple.__rescale), for a square image.

    points: (N, 2) x, y. Returns (M, 2) uint16 column, row indices, M <= N (rows dropped around a NaN).
    """
    xs = np.array(points[:, 0], dtype=float)
    ys = np.array(points[:, 1], dtype=float)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if np.isnan(xs).any():
            xs, ys = _drop_nan_tail(xs, ys, xs)
        if np.isnan(ys).any():
            xs, ys = _drop_nan_tail(xs, ys, ys)
        if xs.min() < 0.0:
            xs -= xs.min()
        if ys.min() < 0.0:
            ys -= ys.min()
        span = float(image_size - 2 * pad)
        qx = np.uint16(xs / (xs.max() - xs.min()) * span + float(pad))
        qy = np.uint16(ys / (ys.max() - ys.min()) * span + float(pad))
    return np.stack([qx, qy], axis=1)


def filling_rate(points: np.ndarray, image_size: int = IMAGE_SIZE, pad: int = PAD) -> float:
    """Fraction of the image_size**2 pixels hit by the points, as ifs_search.cal_pix measures it.

    points: (N, 2) float64. Raises IndexError where the published image write would (a pixel index >= size).
    """
    q = pixel_coords(points, image_size, pad).astype(np.int64)
    if q.size and q.max() >= image_size:
        raise IndexError("pixel outside the image: the published search would raise here")
    hit = np.zeros(image_size * image_size, dtype=bool)
    hit[q[:, 1] * image_size + q[:, 0]] = True
    return np.count_nonzero(hit) / float(image_size * image_size)


def _selections(probs: np.ndarray, uniforms: np.ndarray):
    """Map index per step (len(uniforms) - 1,) int8 and whether every step found a map (see _iterate_scalar).

    The index is the first j with u <= cum[j], i.e. the count of cum[j] < u (cum is non-decreasing): the same as
    searchsorted(cum, u, 'left'), in a few int8 passes instead of a binary search per uniform.
    """
    cum = _cumulative(probs)
    u = uniforms[:-1]
    sel = np.zeros(len(u), dtype=np.int8)
    for c in cum[:-1]:
        sel += u > c
    return sel, bool(u.max() <= cum[-1])


def _iterate_batch(params_list, sel: np.ndarray, out: np.ndarray | None = None, chunk: int = 2048) -> np.ndarray:
    """Chaos games of K systems in lockstep, each bit-identical to _iterate_scalar.

    params_list: K arrays (maps, 6); sel: (K, N - 1) int8 map index per step. Returns points (N, 2, K) float64
    with (0, 0) first, written into ``out`` when given. Per step every system computes ((x*a + y*b) + e,
    (x*c + y*d) + f) in float64 as the published Python loop does (numpy never fuses the separate multiply and
    add calls); only the loop over steps stays in Python, as 4 numpy calls on (2, K) arrays.
    """
    k, n1 = sel.shape
    m = MAX_MAPS_EXCLUSIVE - 1
    # coefficients ordered (a, c, b, d, e, f) so one step is x*[a,c] + y*[b,d] + [e,f]
    table = np.zeros((6, k, m))
    for s, params in enumerate(params_list):
        table[:, s, : len(params)] = params[:, [0, 2, 1, 3, 4, 5]].T
    table = table.reshape(6, k * m)
    offsets = np.arange(k, dtype=np.intp) * m
    pts = np.empty((n1 + 1, 2, k)) if out is None else out
    pts[0] = 0.0
    t1 = np.empty((2, k))
    t2 = np.empty((2, k))
    g = np.empty((6, chunk, k))
    mul, add = np.multiply, np.add
    # diverging systems overflow on many steps; numpy's warning machinery would add to every such call
    with np.errstate(all="ignore"):
        for start in range(0, n1, chunk):
            stop = min(start + chunk, n1)
            flat = sel[:, start:stop].T.astype(np.intp, order="C")  # (S, K); take would copy an F-order index
            flat += offsets
            for c in range(6):  # gather this chunk's coefficients, one contiguous (S, K) plane each
                np.take(table[c], flat, out=g[c, : stop - start], mode="clip")  # "raise" buffers out
            g01, g23, g45 = g[0:2], g[2:4], g[4:6]
            prev = pts[start]
            for i in range(stop - start):
                out = pts[start + i + 1]
                mul(prev[0], g01[:, i], out=t1)
                mul(prev[1], g23[:, i], out=t2)
                add(t1, t2, out=t1)
                add(t1, g45[:, i], out=out)
                prev = out
    return pts


def _fill_batch(pts, valid, image_size: int, pad: int, flat: np.ndarray | None = None, rows: int = 1024) -> np.ndarray:
    """Filling rates of K point sets; pts: (N, 2, K), overwritten; columns with valid False are skipped (NaN).

    flat: optional (K, N) int32 scratch. Same float ops as pixel_coords. The published code subtracts the minimum
    only when it is negative; subtracting min(minimum, 0) instead is the same (x - 0.0 == x), and as rounding is
    monotone the extremes of the shifted points are the shifted extremes.
    """
    n, _, k = pts.shape
    pts[:, :, ~valid] = 0.0  # few columns: keeps the casts below well defined
    span, fpad = float(image_size - 2 * pad), float(pad)
    shift, scale = [], []
    for axis in (0, 1):
        v = pts[:, axis, :]
        mn, mx = v.min(axis=0), v.max(axis=0)
        sh = np.minimum(mn, 0.0)
        shift.append(sh)
        scale.append(np.where(valid, (mx - sh) - (mn - sh), 1.0))
    flat = np.empty((k, n), dtype=np.int32) if flat is None else flat  # pixel index per point, a row per system
    for r0 in range(0, n, rows):  # row blocks keep the passes and the transposition in cache
        blk = pts[r0 : r0 + rows]
        q = []
        for axis in (0, 1):
            v = blk[:, axis, :]
            np.subtract(v, shift[axis], out=v)
            np.divide(v, scale[axis], out=v)
            np.multiply(v, span, out=v)
            np.add(v, fpad, out=v)
            q.append(v.astype(np.uint16))
        if max(q[0].max(), q[1].max()) >= image_size:
            raise IndexError("pixel outside the image: the published search would raise here")
        idx = q[1].astype(np.int32)
        idx *= image_size
        idx += q[0]
        flat[:, r0 : r0 + rows] = idx.T
    hit = np.zeros(image_size * image_size, dtype=bool)
    fills = np.full(k, np.nan)
    for s in np.flatnonzero(valid):  # one image-sized bitmap, reused: fits in cache
        hit[flat[s]] = True
        fills[s] = np.count_nonzero(hit) / float(image_size * image_size)
        hit[flat[s]] = False
    return fills


class _Workspace:
    """Buffers reused across batches: re-allocating (and page-faulting) ~0.3 GB per batch costs more than the math."""

    def __init__(self):
        self._bufs: dict[str, np.ndarray] = {}

    def view(self, name: str, shape: tuple, dtype) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = self._bufs[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def iter_candidates(seed: int = PUBLISHED_SEED, num_points: int = NUM_POINTS) -> Iterator[tuple]:
    """Endless stream of (params, probs, uniforms) candidates from ``RandomState(seed)``, in published order."""
    rng = np.random.RandomState(seed)
    while True:
        yield draw_candidate(rng, num_points)


def search_categories(
    num_classes: int,
    seed: int = PUBLISHED_SEED,
    threshold: float = FILL_THRESHOLD,
    num_points: int = NUM_POINTS,
    image_size: int = IMAGE_SIZE,
    pad: int = PAD,
    batch_size: int = 512,
    max_candidates: int | None = None,
) -> list[Category]:
    """The published FractalDB category search: the first ``num_classes`` candidates with filling rate >= threshold.

    Candidates are drawn one by one from the stream (cheap) and their chaos games run ``batch_size`` at a time in
    lockstep; acceptance never changes the stream, so batching returns exactly the published categories.
    Returns a list of Category (params (maps, 6), probs (maps,)).
    Memory: about 22 * num_points * batch_size bytes (1.1 GB at the defaults).
    max_candidates: give up (RuntimeError) after about this many candidates (the published search never does).
    """
    cands = iter_candidates(seed, num_points)
    work = _Workspace()
    found: list[Category] = []
    index = 0
    rate_guess = 0.05  # about 3% of candidates pass at the published settings
    while len(found) < num_classes:
        if max_candidates is not None and index >= max_candidates:
            raise RuntimeError(f"only {len(found)} of {num_classes} categories reached filling rate {threshold} in "
                               f"{index} candidates")
        # size the batch to what is probably still needed, so a short search does not run a full batch
        k = max(8, min(batch_size, int((num_classes - len(found)) / rate_guess) + 4))
        params, probs, redo = [], [], {}
        sel = work.view("sel", (k, num_points - 1), np.int8)
        for s in range(k):
            p, w, u = next(cands)
            params.append(p)
            probs.append(w)
            sel[s], ok = _selections(w, u)
            if not ok:
                redo[s] = u  # rare published fallback (repeat the point): redone one by one below
        pts = _iterate_batch(params, sel, out=work.view("pts", (num_points, 2, k), np.float64))
        finite = np.isfinite(pts).all(axis=(0, 1))
        finite[list(redo)] = False
        fills = np.full(k, np.nan)
        for s in np.flatnonzero(~finite):  # diverging systems (or the fallback) take the published NaN path
            p = _iterate_scalar(params[s], probs[s], redo[s]) if s in redo else pts[:, :, s]
            fills[s] = filling_rate(p, image_size, pad)
        flat = work.view("flat", (k, num_points), np.int32)
        fills[finite] = _fill_batch(pts, finite, image_size, pad, flat)[finite]
        for s in range(k):
            if fills[s] >= threshold and len(found) < num_classes:
                found.append(Category(params[s], probs[s], index + s, float(fills[s])))
        index += k
        rate_guess = max(0.01, len(found) / index)
    return found


def instance_weights(weight: str = PUBLISHED_WEIGHT) -> np.ndarray:
    """The (25, 6) multiplier rows of ``fractal_renderer/weights/weights_<weight>.csv``, in file order.

    With the file's factors f0 < f1 < 1 < f2 < f3 (0.2, 0.6, 1.4, 1.8 for "0.4"): a*f0, a*f1, identity, a*f2,
    a*f3, then b, c, d, e, f each times f0, f1, f2, f3. Columns multiply a..f.
    """
    factors = [float(v) for v in _WEIGHT_FACTORS[weight]]
    rows = []
    for p in range(6):
        for j, fac in enumerate(factors):
            if p == 0 and j == 2:
                rows.append(np.ones(6))  # identity row sits in the middle of the first parameter's block
            r = np.ones(6)
            r[p] = fac
            rows.append(r)
    return np.asarray(rows)


def instance_params(params: np.ndarray, weight: str = PUBLISHED_WEIGHT) -> np.ndarray:
    """Parameters of one category's instances: (25, maps, 6) = params (maps, 6) times each weight row.

    Each row scales one parameter (a..f) of every map at once; the category's probabilities stay as they are.
    """
    w = instance_weights(weight)
    return np.asarray(params, float)[None, :, :] * w[:, None, :]


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    t0 = time.perf_counter()
    cats = search_categories(n)
    dt = time.perf_counter() - t0
    print(f"{n} categories from {cats[-1].candidate + 1} candidates in {dt:.1f} s")

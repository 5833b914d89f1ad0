"""Family ``svd2d``: the single-instance fractals of Anderson & Farrell ("Improving Fractal Pre-training", WACV 2022).

Each category is one 2D IFS drawn by the exact port of the published sampler (:mod:`dr_fdsl.families.svd2d`,
``ifs.sample_system``): ``n`` maps (``bank.svd2d.min_maps`` .. ``max_maps``, published 2..4), each ``U diag(s) V``
with random orthogonal ``U``, ``V`` and singular values whose sigma-factor ``sum_i (s1_i + 2 s2_i)`` lies in
``[(5 + n) / 2, (6 + n) / 2]``, translations ``U(-bval, bval)``. Category ``c`` draws from its own generator
``numpy.random.default_rng(bank.seed * 2**32 + c)`` (the published dataset script draws every system from an unseeded
generator, so its ``ifs-100k.pkl`` cannot be regenerated; with ``bank.seed=0`` category ``c`` is what
``sample_system`` draws from ``default_rng(c)``), which then draws one more integer in ``[0, 2^32)``: the seed of the
legacy MT19937 stream of the category's chaos game (the published ``ifs.iterate`` reads numba's global generator).

The points are ``ifs.iterate``'s, bit for bit: ``bank.num_points`` steps from the fixed point of map 0 (not
returned), map ``k`` the first whose running probability sum exceeds the uniform, probabilities ``|det A_i|``
normalised. They are placed as ``ifs.render`` places them in its square image of ``bank.svd2d.canvas`` pixels,
whose window is the points' own bounding box (each axis stretched to fill it): the published pixel row comes from
x, ``r = int((x - xmin) * (canvas - 1) / xspan)``, the column from y. With ``u = (x - xmin) * (canvas - 1) / xspan``
and ``v`` likewise from y, a point lies at NDC ``(1 - (2 v + 1) / canvas, 1 - (2 u + 1) / canvas, 0)`` (+x left,
+y up): under ``renderer.view.rotation=none``, ``projection=orthographic``, ``ortho_scale=[1, 1]`` a point with
integral ``u, v`` is drawn at the centre of its published pixel, any other within half a pixel of it (rounded where
the published code truncates). The point sets are centred: the window spans ``[-(1 - 1/canvas), 1 - 1/canvas]``.

Colour: each point's grey level is the published density colouring's input, the count of points in its pixel of
that image over the largest count (``ifs._render_graded``), in params ``grey (C, N)``; ``renderer.color_init=bank``
starts from it. Not reproduced here: the published hue mapping of those levels (a random hue shift, saturation
and value per image, through HSV) and the 3 x 3 random point patches (the renderer draws discs). The per-image
jitter of one map is ``renderer.augment.map_jitter`` (:mod:`dr_fdsl.families.svd2d.instances`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from dr_fdsl.errors import BankError
from dr_fdsl.families.base import FamilyOutput
from dr_fdsl.families.svd2d import published as svd2d
from dr_fdsl.families.svd2d.settings import BATCH, SEED_STRIDE
from dr_fdsl.memory import index_dtype

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig

CHUNK = 10_000


def draw_category(seed: int, c: int, min_maps: int, max_maps: int, bval: float) -> tuple[dict, int]:
    """Category ``c``'s system (:func:`svd2d.sample_system_parts`) and its chaos-game seed in ``[0, 2^32)``."""
    rng = np.random.default_rng(seed * SEED_STRIDE + c)
    parts = svd2d.sample_system_parts(rng, n=(min_maps, max_maps + 1), bval=bval)
    return parts, int(rng.integers(0, 2**32))


def chaos_games(systems: list[np.ndarray], seeds: list[int], num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``ifs.iterate`` for several systems in lockstep: points ``(S, num_points, 2)`` float64, bit for bit
    :func:`svd2d.iterate` (``seeds[i]`` seeds the legacy MT19937 stream of system ``i``, one uniform per step), and
    the map each step applied ``(S, num_points)`` int64.

    The maps each step applies are chosen first (``searchsorted`` on the running sums is the published "first
    ``k`` with ``r < cumsum[k]``", capped at the last map); then every step is the same three float operations per
    coordinate as the published loop, on arrays of the systems.
    """
    s, m = len(systems), max(len(sys) for sys in systems)
    coef = np.zeros((s, m, 6))
    chosen = np.empty((s, num_points), dtype=np.int64)
    x, y = np.empty(s), np.empty(s)
    for i, (sys, seed) in enumerate(zip(systems, seeds)):
        coef[i, :len(sys)] = sys.reshape(len(sys), 6)  # a, b, e, c, d, f
        cum = np.cumsum(svd2d.probabilities(sys))
        r = np.random.RandomState(seed).random_sample(num_points)
        chosen[i] = np.minimum(np.searchsorted(cum, r, side="right"), len(sys) - 1)
        x[i], y[i] = svd2d.fixed_point(sys)
    out = np.empty((num_points, 2, s))
    rows = np.arange(s)[:, None]
    for start in range(0, num_points, CHUNK):  # the steps' coefficients, a chunk at a time (memory)
        stop = min(start + CHUNK, num_points)
        steps = np.ascontiguousarray(coef[rows, chosen[:, start:stop]].transpose(1, 2, 0))  # (T, 6, S) step-major
        for t in range(stop - start):
            a, b, e, c, d, f = steps[t]
            x, y = a * x + b * y + e, c * x + d * y + f
            out[start + t, 0], out[start + t, 1] = x, y
    return out.transpose(2, 0, 1), chosen


def window_coords(points: np.ndarray, canvas: int) -> np.ndarray:
    """``(N, 2)`` points -> ``(N, 2)`` continuous pixel coordinates ``(u, v)`` in ``[0, canvas - 1]`` of
    ``ifs.render``'s image over the points' bounding box (``u`` along rows from x, ``v`` along columns from y),
    with the published float operations: ``(coord - min) * ((canvas - 1) / span)``, a span of 0 taken as 1."""
    lo, hi = points.min(0), points.max(0)
    span = hi - lo
    span = np.where(span > 0, span, 1.0)
    return (points - lo) * ((canvas - 1) / span)


def density_grey(uv: np.ndarray, canvas: int) -> np.ndarray:
    """Each point's grey level ``(N,)`` in (0, 1]: the number of points in its published pixel (``int`` of ``u``,
    ``v``) over the largest such number (``ifs._render_graded``, without patches)."""
    pix = uv.astype(np.int64)  # int() truncates; the coordinates are >= 0
    counts = np.zeros((canvas, canvas))
    np.add.at(counts, (pix[:, 0], pix[:, 1]), 1.0)
    return counts[pix[:, 0], pix[:, 1]] / counts.max()


def ndc_points(uv: np.ndarray, canvas: int) -> np.ndarray:
    """Pixel coordinates ``(N, 2)`` ``(u, v)`` -> ``(N, 3)`` NDC points (+x left from v, +y up from u), z = 0."""
    y = 1.0 - (2.0 * uv[:, 0] + 1.0) / canvas
    x = 1.0 - (2.0 * uv[:, 1] + 1.0) / canvas
    return np.stack([x, y, np.zeros_like(x)], axis=-1)


def generate(cfg: BankConfig, progress: bool = False) -> FamilyOutput:
    """Points ``(C, N, 3)`` float32 (see the module docstring) and params: ``system (C, max_maps, 2, 3)`` float64
    (rows ``[a, b, e], [c, d, f]``, zero beyond each system's maps), ``singular_values (C, max_maps, 2)``,
    ``sigma_factor (C,)`` float64, ``num_maps (C,)``, ``iterate_seed (C,)`` int64, ``maps (C, N)`` (the map
    each chaos-game step applied: a point's address, which ``renderer.augment.map_jitter`` replays with jittered
    maps; uint8 up to 256 maps, int16 beyond, :func:`~dr_fdsl.memory.index_dtype`), ``grey (C, N)`` float32."""
    s, c, n = cfg.svd2d, cfg.num_classes, cfg.num_points
    m = s.max_maps
    system = torch.zeros(c, m, 2, 3, dtype=torch.float64)
    singular = torch.zeros(c, m, 2, dtype=torch.float64)
    alpha = torch.zeros(c, dtype=torch.float64)
    num_maps = torch.zeros(c, dtype=torch.int64)
    seeds = torch.zeros(c, dtype=torch.int64)
    points = torch.empty(c, n, 3)
    grey = torch.empty(c, n)
    maps = torch.empty(c, n, dtype=index_dtype(m))  # uint8 would wrap from map 256 on
    starts = range(0, c, BATCH)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="svd2d categories", unit="batch")
    for start in starts:
        idx = range(start, min(start + BATCH, c))
        drawn = [draw_category(cfg.seed, i, s.min_maps, s.max_maps, s.bval) for i in idx]
        coords, chosen = chaos_games([p["system"] for p, _ in drawn], [k for _, k in drawn], n)
        for j, i in enumerate(idx):
            parts, seed = drawn[j]
            if not np.isfinite(coords[j]).all():
                raise BankError(f"category {i}: its chaos game is not finite (map 0 has no fixed point); "
                                "choose another bank.seed")
            k = len(parts["system"])
            system[i, :k] = torch.from_numpy(parts["system"])
            singular[i, :k] = torch.from_numpy(parts["s"])
            alpha[i], num_maps[i], seeds[i] = parts["alpha"], k, seed
            maps[i] = torch.from_numpy(chosen[j]).to(maps.dtype)
            uv = window_coords(coords[j], s.canvas)
            points[i] = torch.from_numpy(ndc_points(uv, s.canvas)).float()
            grey[i] = torch.from_numpy(density_grey(uv, s.canvas)).float()
    params = {"system": system, "singular_values": singular, "sigma_factor": alpha, "num_maps": num_maps,
              "iterate_seed": seeds, "maps": maps, "grey": grey}
    return FamilyOutput(points, params, c)


def check_cached(params: dict[str, torch.Tensor]) -> str | None:
    """Why a cached bank cannot be used, or None: banks made before map indices were widened stored them as uint8
    whatever the count, so a system of more than 256 maps holds wrapped indices (``map_jitter`` would replay other
    maps)."""
    maps, num_maps = params.get("maps"), params.get("num_maps")
    if maps is None or num_maps is None or not len(num_maps):
        return None
    most = int(num_maps.max())
    if most > torch.iinfo(maps.dtype).max + 1:
        return (f"its map indices are {maps.dtype}, which cannot hold the {most} maps of its largest system (it was "
                "written before indices were widened)")
    return None

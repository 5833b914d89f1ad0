"""Family ``visualatom``: VisualAtom's categories, their orbits drawn as lines of points.

VisualAtom (Takashima et al., CVPR 2023) draws each category as L closed orbits of K vertices on a black 512 px
canvas, in grey levels, with PIL's 1-pixel lines; later orbits overwrite earlier ones. The parameters, centres,
grey levels and vertices come from :mod:`dr_fdsl.families.visualatom` (an exact port of the published generator):
replayed from the published run (``bank.visualatom.replay=true``) or drawn from a fresh stream seeded with
``bank.seed``. The bank holds instance 0 of each category; ``bank.visualatom.instances`` draws per image another
centre and other orbit grey levels (:mod:`dr_fdsl.families.visualatom.instances`), not the other instances' noise.

From vertices to points, per category:

* Pixels: PIL truncates each float vertex (X, Y) to the integer pixel (int(X), int(Y)) = (col, row) and draws
  1-pixel Bresenham lines between those. We keep the same pixel: vertex -> ``(int(X) + 1/2, int(Y) + 1/2)``, the
  centre of the pixel PIL draws it in (continuous canvas coordinates, pixel j spanning [j, j + 1]), and sample the
  straight lines between these centres, which Bresenham's pixels follow to within half a pixel. (Lines through
  the unrounded vertices lie up to a pixel off PIL's: on 7 categories the overlap with PIL's drawing dropped from
  0.90-0.98 to 0.63-0.95.) Negative coordinates truncate toward zero as in PIL.
* Segments: each orbit is a closed polyline (K segments, the last back to vertex 0). Each segment is clipped to
  the canvas grown by ``MARGIN`` pixels (what lies beyond cannot reach a pixel); orbits often run far off it.
* Dense samples: a segment whose drawn part has length ``l`` gets ``m = max(1, ceil(l / spacing))`` samples at
  ``t0 + (t1 - t0) j / m``, ``j = 0..m-1`` (``[t0, t1]``: its part inside the margin), so consecutive samples are
  at most ``spacing`` (0.5 px) apart and every vertex inside the margin is a sample, exactly. Drawn with radius
  0.6 px (``renderer.radius_init = 0.6 * 2 / image_size``), the discs' weights ``1 - d^2 / r^2`` composite to
  more than 1/2 at a pixel centre up to ~0.4 px from the line and to less beyond ~0.45 px: a connected line about
  one pixel wide, as PIL's. Measured against PIL's drawing at 512 px (white on black, > 1/2): IoU 0.90-1.00,
  median 0.955, over 20 categories; radii of 0.5 and 0.7 px overlap less (tests/test_families.py checks one).
* ``bank.num_points`` (N) against the M dense samples. ``M > N``: sub-sampled uniformly along the arc length, N
  points at arc positions ``(k + 1/2) S / N`` over the drawn parts taken in order (total length S), so neighbours
  on a segment are ``S / N`` apart (vertices are then generally not samples). ``M < N``: padded with ``N - M``
  copies of one sample, a vertex on the canvas (the first one), placed after the M samples. Under alpha
  compositing ``c copies`` of a point of weight ``w`` give coverage ``1 - (1 - w)^(c + 1)``, so copies change
  only pixels the point already reaches: a vertex sits on a pixel centre and its 0.6 px disc reaches no other
  centre, so the copies darken or lighten nothing but the one pixel PIL draws the vertex in (towards the orbit's
  grey). Spreading the copies along the line instead (every sample repeated evenly) raises the coverage of the
  whole line's fringe, thickening it: measured at 224 px (against PIL's drawing at 224), ~3x repeats drop the
  overlap from 0.90 to 0.81. Points moved off the canvas are not an option in the bank: its coordinates are
  cloud coordinates, which views and augmentations may rotate, shift or scale back into the image.
* Order: the last orbit first. PIL's later orbits overwrite earlier ones; all points lie at z = 0, so they tie in
  depth, and the sort rasteriser puts the lower index in front (PyTorch3D's kernels leave ties to their order).
  The padding copies come last: behind everything, they take only fragment slots no sample needs.
* Coordinates: canvas position ``(X', Y')`` (from the top left) -> NDC ``x = 1 - 2 X' / canvas``,
  ``y = 1 - 2 Y' / canvas``, ``z = 0``; a vertex gets ``x = 1 - (2 int(X) + 1) / canvas``, the centre of the
  published pixel. With ``renderer.view.rotation=none``, ``projection=orthographic`` and ``ortho_scale=[1, 1]``
  the canvas spans the image.
* Colour: each point carries its orbit's grey level / 255 (params ``grey (C, N)``), the initial colour under
  ``renderer.color_init=bank``.

The points are neither centred nor rescaled: they are where the canvas has them (within its margin).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from dr_fdsl.errors import BankError
from dr_fdsl.families.base import FamilyOutput
from dr_fdsl.families.visualatom import published as va
from dr_fdsl.memory import index_dtype

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig

MARGIN = 4.0  # canvas pixels beyond the edge still sampled (discs of radius up to 4 px can reach the canvas)


def script_config(cfg: BankConfig) -> va.ScriptSettings:
    """``bank.visualatom`` as the published script's knobs."""
    f = cfg.visualatom
    return va.ScriptSettings(
        numof_classes=f.numof_classes, numof_instances=f.numof_instances, numof_thread=f.numof_thread,
        start_class=f.start_class, image_size=f.canvas, vertex_num_min=f.vertex_num_min,
        vertex_num_max=f.vertex_num_max, perlin_min=f.perlin_min, line_width=f.line_width, radius_min=f.radius_min,
        line_num_min=f.line_num_min, line_num_max=f.line_num_max, oval_rate=f.oval_rate, start_pos=f.start_pos,
        nami_1_min=f.nami_1_min, nami_2_min=f.nami_2_min, nami_1_max=f.nami_1_max, nami_2_max=f.nami_2_max)


# --------------------------------------------------------------------------------------------------------
# Categories: (parameters, instance-0 centre, grey levels, noise arguments)
# --------------------------------------------------------------------------------------------------------


def categories(cfg: BankConfig) -> Iterator[tuple[va.CategoryParams, tuple[float, float], np.ndarray, np.ndarray]]:
    """The ``cfg.num_classes`` categories in order: params, centre (x, y), grays (L,) and u (L, 2, K) of instance
    0 (see :mod:`dr_fdsl.families.visualatom`)."""
    script = script_config(cfg)
    if cfg.visualatom.replay:
        stop = script.start_class + cfg.num_classes
        for thread in range(script.locate(stop - 1)[0] + 1):
            for category in va.replay_thread(thread, script, instances=(0,), stop=stop):
                draws = category.instances[0]
                yield category.params, draws.centre, draws.grays, draws.u
        return
    stream = va.MersenneStream(cfg.seed)
    for index in range(cfg.num_classes):  # the script's order within an instance; no other instances
        params = va.sample_category(stream, index, script)
        centre = va.draw_centre(stream, script)
        grays, u = va.draw_orbits(stream, params)
        yield params, centre, grays, u


def vertices(params: va.CategoryParams, centre: tuple[float, float], u: np.ndarray) -> torch.Tensor:
    """``(L, K, 2)`` float64 canvas pixels (x, y), orbit l as the script hands it to PIL."""
    return va.orbit_vertices(params, centre, u)


# --------------------------------------------------------------------------------------------------------
# Polylines to points
# --------------------------------------------------------------------------------------------------------


def clip_segments(verts: torch.Tensor, lo, hi) -> tuple[torch.Tensor, ...]:
    """The closed polylines' segments and the part of each inside the box ``[lo, hi]^2`` (Liang-Barsky).

    Args:
        verts: ``(L, K, 2 + E)`` float64: x, y, then E features interpolated along with them (not clipped on).
        lo, hi: the box's bounds, one float for both axes or a pair (x, y).
    Returns:
        start ``(S, 2 + E)``, direction ``(S, 2 + E)`` (end - start), t0, t1 ``(S,)`` and orbit ``(S,)`` int64 of
        the S segments that touch the box, in order (orbit-major, segment k from vertex k to k + 1 mod K).
    """
    num_orbits, k, width = verts.shape
    lo, hi = (v if isinstance(v, (tuple, list)) else (v, v) for v in (lo, hi))
    start = verts.reshape(-1, width)
    direction = torch.roll(verts, -1, dims=1).reshape(-1, width) - start
    orbit = torch.arange(num_orbits).repeat_interleave(k)
    t0 = torch.zeros(start.shape[0], dtype=verts.dtype)
    t1 = torch.ones_like(t0)
    for axis in range(2):
        d, p = direction[:, axis], start[:, axis]
        for step, room in ((-d, p - lo[axis]), (d, hi[axis] - p)):  # inside while t * step <= room
            ratio = room / torch.where(step == 0, torch.ones_like(step), step)
            t0 = torch.where(step < 0, torch.maximum(t0, ratio), t0)
            t1 = torch.where(step > 0, torch.minimum(t1, ratio), t1)
            t1 = torch.where((step == 0) & (room < 0), torch.full_like(t1, -1.0), t1)  # parallel and outside
    keep = t0 <= t1
    return start[keep], direction[keep], t0[keep], t1[keep], orbit[keep]


def published_pixels(verts: torch.Tensor) -> torch.Tensor:
    """The centre of the pixel PIL draws each vertex in: ``trunc(v) + 1/2`` (continuous canvas coordinates)."""
    return verts.trunc() + 0.5


def sample_polylines(verts: torch.Tensor, num_points: int, spacing: float, canvas: int, box=None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float]:
    """Points along the closed polylines ``verts (L, K, 2 + E)`` (continuous canvas coordinates, then E features
    interpolated like them), capped or padded to ``num_points`` (see the module docstring). ``box``: the
    ``(lo, hi)`` region sampled (see :func:`clip_segments`), by default the canvas grown by ``MARGIN``.

    Returns:
        points ``(num_points, 2 + E)`` float64, orbit ``(num_points,)`` int64 (each point's orbit), vertex
        ``(num_points,)`` bool (the point is a vertex, exactly), M (dense samples) and S (drawn length, pixels).
    """
    lo, hi = box if box is not None else (-MARGIN, canvas + MARGIN)
    start, direction, t0, t1, orbit = clip_segments(verts, lo, hi)
    part = direction[:, :2].norm(dim=1) * (t1 - t0)  # length of each segment's drawn part
    count = (part / spacing).ceil().long().clamp_min(1)
    dense, length = int(count.sum()), float(part.sum())
    if dense == 0 or length == 0:
        raise BankError("it draws nothing on the canvas (every orbit lies outside it); check "
                        "bank.visualatom.start_pos")
    if dense > num_points:  # uniform along the arc length: N points S / N apart
        ends = part.cumsum(0)
        where = (torch.arange(num_points, dtype=torch.float64) + 0.5) * (length / num_points)
        seg = torch.searchsorted(ends, where, right=True).clamp_max(len(part) - 1)
        local = ((where - (ends[seg] - part[seg])) / part[seg].clamp_min(1e-300)).clamp(0, 1)
        t = t0[seg] + (t1[seg] - t0[seg]) * local
        return start[seg] + t[:, None] * direction[seg], orbit[seg], t == 0, dense, length
    seg = torch.arange(len(count)).repeat_interleave(count)
    j = torch.arange(dense) - (count.cumsum(0) - count)[seg]
    t = t0[seg] + (t1[seg] - t0[seg]) * j / count[seg]
    points = start[seg] + t[:, None] * direction[seg]  # exactly the vertex where t = 0
    vertex = t == 0
    # Padding: copies of the first vertex on the canvas (else of the first sample on it), after the M samples.
    inside = ((points[:, :2] >= 0) & (points[:, :2] < canvas)).all(1)
    candidates = (vertex & inside).nonzero()
    if len(candidates) == 0:
        candidates = inside.nonzero()
    anchor = int(candidates[0]) if len(candidates) else 0
    pick = torch.cat([torch.arange(dense), torch.full((num_points - dense,), anchor)])
    return points[pick], orbit[seg][pick], vertex[pick], dense, length


def instance_box(centre: tuple[float, float], canvas: int, start_pos: int) -> tuple[tuple, tuple]:
    """The region ``(lo, hi)`` (x, y bounds, instance 0's canvas pixels) that some instance centre brings within
    ``MARGIN`` of the canvas: centres lie in ``[(canvas - start_pos) / 2, (canvas + start_pos) / 2]`` on each axis,
    so an instance moves instance 0's points by ``d`` in ``[low - centre, high - centre]`` (plus a pixel for the
    half-pixel steps)."""
    low, high = (canvas - start_pos) / 2, (canvas + start_pos) / 2
    lo = tuple(-MARGIN - 1 - (high - c) for c in centre)
    hi = tuple(canvas + MARGIN + 1 - (low - c) for c in centre)
    return lo, hi


def half_steps(raw: torch.Tensor) -> torch.Tensor:
    """Where each vertex's drawn pixel goes, beyond the shift, when the orbit moves by half a pixel.

    An instance moves the orbit by ``d`` (a multiple of 1/2 on each axis). PIL draws vertex ``v`` in pixel
    ``trunc(v + d)``; for ``v + d >= 0`` and ``v >= 0`` that is ``floor``, and ``floor(v + d) = floor(v) + d`` for an
    integer ``d`` while for a half-integer one ``floor(v + d) = floor(v + 1/2) + d - 1/2``: the pixel centre moves by
    ``d + h`` with ``h = floor(v + 1/2) - floor(v) - 1/2`` = -1/2 or +1/2 (by whether ``v``'s fraction is below
    1/2). Returns ``h`` ``(..., 2)`` float64 for raw vertices ``(..., 2)``; between vertices it is interpolated like
    the points (the drawn polyline's vertices move, so its samples move with them)."""
    return torch.floor(raw + 0.5) - torch.floor(raw) - 0.5


def canvas_to_ndc(xy: torch.Tensor, canvas: int) -> torch.Tensor:
    """Canvas pixels ``(..., 2)`` (x = column, y = row, from the top left) -> NDC (+x left, +y up), float64."""
    return 1 - 2 * xy / canvas


# --------------------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------------------


def generate(cfg: BankConfig, progress: bool = False) -> FamilyOutput:
    """Points ``(C, N, 3)`` float32 (NDC of the canvas, z = 0) and params:

    * ``category (C, 9)`` float64: K, L, lambda, w, r0, n1, n2, oval_x, oval_y (the script's order);
    * ``centre (C, 2)`` float64: instance 0's centre (x, y), canvas pixels;
    * ``grays (C, line_num_max)`` int64: each orbit's grey level in 0..255, orbit 0 first, -1 beyond L;
    * ``grey (C, N)`` float32: each point's grey level / 255 (``renderer.color_init=bank``);
    * ``num_samples (C,)`` int64 and ``line_length (C,)`` float64: the dense sample count M before the cap or
      padding to N, and the drawn length in canvas pixels.

    With ``bank.visualatom.instances`` the orbits are sampled over the region that any instance centre can bring
    onto the canvas (:func:`instance_box`), and params also hold

    * ``orbit (C, N)`` int16 (int32 beyond 2^15 orbits): each point's orbit, published order (orbit 0 drawn first);
    * ``half_step (C, N, 2)`` float16: how the point moves, beyond the shift itself, when its orbit is shifted by
      half a pixel (canvas pixels; :func:`half_steps`).
    """
    f, c, n = cfg.visualatom, cfg.num_classes, cfg.num_points
    points = torch.zeros(c, n, 3)
    grey = torch.empty(c, n)
    category = torch.empty(c, 9, dtype=torch.float64)
    centres = torch.empty(c, 2, dtype=torch.float64)
    grays = torch.full((c, f.line_num_max), -1, dtype=torch.int64)
    num_samples = torch.empty(c, dtype=torch.int64)
    line_length = torch.empty(c, dtype=torch.float64)
    # compact (the bank may hold 10^8 points), and wide enough for line_num_max orbits: int16 (what banks cached
    # before stored, up to 2^15 orbits), int32 beyond
    orbits = torch.empty(c, n, dtype=max(torch.int16, index_dtype(f.line_num_max), key=lambda d: d.itemsize))
    half = torch.empty(c, n, 2, dtype=torch.float16)  # in [-1/2, 1/2]: float16 keeps it to 2.5e-4 px
    bar = tqdm(total=c, desc="visualatom bank", unit="class", disable=not progress)
    for i, (params, centre, g, u) in enumerate(categories(cfg)):
        raw = vertices(params, centre, u).flip(0)  # the last orbit first: in front
        verts = published_pixels(raw)
        box = None
        if f.instances:
            verts = torch.cat([verts, half_steps(raw)], dim=-1)
            box = instance_box(centre, f.canvas, f.start_pos)
        try:
            xy, orbit, _, num_samples[i], line_length[i] = sample_polylines(verts, n, f.spacing, f.canvas, box)
        except BankError as err:
            raise BankError(f"visualatom category {i}: {err}") from None
        if f.instances:
            orbits[i] = (params.num_orbits - 1 - orbit).to(orbits.dtype)
            half[i] = xy[:, 2:].to(torch.float16)
            xy = xy[:, :2]
        points[i, :, :2] = canvas_to_ndc(xy, f.canvas).float()
        grey[i] = torch.from_numpy(g[::-1].copy())[orbit].float() / 255
        category[i] = torch.tensor([params.num_vertices, params.num_orbits, params.noise_amp, params.width,
                                    params.radius, params.n1, params.n2, params.oval_x, params.oval_y],
                                   dtype=torch.float64)
        centres[i] = torch.tensor(centre, dtype=torch.float64)
        grays[i, :len(g)] = torch.from_numpy(g)
        bar.update(1)
    bar.close()
    params = {"category": category, "centre": centres, "grays": grays, "grey": grey, "num_samples": num_samples,
              "line_length": line_length}
    if f.instances:
        params.update(orbit=orbits, half_step=half)
    return FamilyOutput(points, params, c)

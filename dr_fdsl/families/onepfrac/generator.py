"""Family ``onepfrac``'s generator: 1p-frac ("Scaling Backwards: Minimal Synthetic Pre-training?", Nakamura,
Tadokoro et al., ECCV 2024): one 2D fractal, each category that fractal with its map parameters slightly perturbed.

Reference: github.com/SUPER-TADORY/1p-frac at commit 413d3184b9e26ef6f81c19c03cabf4b6e0f4a629, files
``1p-frac_generater/src/render_from_oneparam_mp.py``, ``ifs_function.py``, ``utils.py``, ``generate.sh`` and the
READMEs. Written anew from reading that code; what it does:

* **The fractal.** ``utils.sample_system(N, beta=[sigma - 0.1, sigma + 0.1])`` (Anderson & Farrell's sampler, the
  same code as :func:`dr_fdsl.families.svd2d.published.sample_system_parts`; ``N = 2`` maps, translations
  U(-1, 1)) on an unseeded ``default_rng()``. The README's table uses sigma 3.5, ``generate.sh`` passes 4.0
  (``bank.onepfrac.sigma``, default 3.5). Here it is drawn from ``default_rng(bank.seed)``: with that generator
  the system is the published function's bit for bit (``tests/fixtures/onepfrac/``).
* **Probabilities.** ``|np.linalg.det(A_i)|`` over their sum, computed once from the unperturbed maps and never
  recomputed. numpy's ``det`` is LAPACK's LU (pivot on the larger ``|a00|, |a10|``, multiplier ``a10 * (1 / a00)``,
  ``u11 = a11 - l10 a01``) returned as ``exp(log|u00| + log|u11|)``: :func:`abs_dets` emulates it exactly (it
  differs from ``|ad - bc|`` in the last bits of about half the maps).
* **The perturbation.** Per category, per map in order, six ``random.uniform(1 - delta, 1 + delta)`` multiply
  ``a, b, c, d, e, f`` (translations included). Python's ``random``, unseeded (and reseeded in every forked pool
  worker): not reproducible, so here category ``c`` draws its factors, attempt after attempt, from
  ``default_rng([bank.seed, c])`` with the same formula ``lo + (hi - lo) * u``: the published distribution.
* **The drawing.** ``ifs_function.calculate``: ``np.random.seed(100)`` then ``random(iteration)``, 100,000
  points from (0, 0) (kept), step ``i`` the first map whose running probability sum is ``>= u_i`` (none: the
  point repeats), the last uniform unused. Seeded: every category shares this map sequence, reproduced exactly.
  ``__rescale``: shift to a zero minimum (when negative), ``uint16(x / (max - min) * (512 - 2 * 6) + 6)``. Then
  ``draw_patch``: for each point a 3 x 3 patch of grey 127 whose cells are the bits of
  ``random.randrange(1, 512)`` (unseeded Python ``random``; later patches overwrite earlier ones, black cells
  included) pasted with its top-left pixel at ``(x + 1, y + 1)``; the image saved flipped top to bottom.
* **The filter.** Accepted when the lit fraction of the canvas exceeds ``--pixel_threshold`` 0.05; otherwise the
  category draws new factors (and new masks) and is drawn again. Here the masks of each attempt are drawn from
  the category's generator after its factors, and the fill rate is the published one of that drawing exactly.

The bank stores one fractal, not ``C``: ``points (C, N, 3)`` are the unperturbed fractal's drawing expanded over the
categories (stride 0: saved once, one row in the renderer), and each category's own points are made on the device
in the step from its factors (:class:`dr_fdsl.families.onepfrac.instances.OnePFracReplay`, the shared map
sequence replayed as a prefix scan). A point lies at the centre of its published patch in the saved (flipped)
image; under ``renderer.view.rotation=none``, ``projection=orthographic``, ``ortho_scale=[1, 1]`` the image is the
published canvas. Not reproduced in the drawing: the random patch masks (a disc covers each whole patch) and the
exact grey.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from dr_fdsl.errors import BankError
from dr_fdsl.families.base import FamilyOutput
from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.onepfrac.settings import BATCH, MAX_MAPS  # noqa: F401  (MAX_MAPS: re-exported)

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig
from dr_fdsl.families.svd2d import published as svd2d

CHAOS_SEED = 100  # ifs_function.calculate: np.random.seed(100)
PATCH_OFFSET = 2  # draw_patch pastes the 3 x 3 patch at (x + 1, y + 1): its centre is the pixel + 2
MASK_VALUES = (1, 512)  # random.randrange(1, 512): never an empty patch
MAX_ATTEMPTS = 1000  # draws of one category before giving up (the published loop never does)


def abs_dets(mats: np.ndarray) -> np.ndarray:
    """``|np.linalg.det|`` of ``(M, 2, 2)`` float64 matrices, rounded as numpy's LAPACK LU computes it (see the
    module docstring); 0 where a pivot is 0. ``(M,)`` float64."""
    a = np.array(mats, dtype=np.float64)
    swap = np.abs(a[:, 1, 0]) > np.abs(a[:, 0, 0])  # idamax: the first of equal magnitudes stays
    a[swap] = a[swap][:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        u11 = a[:, 1, 1] - a[:, 1, 0] * (1.0 / a[:, 0, 0]) * a[:, 0, 1]
    out = np.empty(len(a))
    for i, (u0, u1) in enumerate(zip(a[:, 0, 0].tolist(), u11.tolist())):
        out[i] = 0.0 if u0 == 0.0 or u1 == 0.0 else math.exp(math.log(abs(u0)) + math.log(abs(u1)))
    return out


def base_system(seed: int, sigma: float, margin: float, num_maps: int) -> dict:
    """The one fractal: :func:`svd2d.sample_system_parts` on ``default_rng(seed)`` with the published
    ``beta = [sigma - margin, sigma + margin]``, plus ``rows (M, 6)`` (columns a, b, c, d, e, f as the published
    ``reshape``) and ``probs (M,)`` (``calc_p``: ``|det|`` over their numpy sum)."""
    parts = svd2d.sample_system_parts(np.random.default_rng(seed), n=num_maps, beta=[sigma - margin, sigma + margin],
                                      bval=1.0)
    m = parts["system"]
    rows = np.stack([m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2]], axis=1)
    dets = abs_dets(m[:, :, :2])
    return {**parts, "rows": rows, "probs": dets / dets.sum()}


def draw_attempt(rng: np.random.Generator, num_maps: int, delta: float, num_points: int, mask: str):
    """One attempt of a category: its factors ``(M, 6)`` float64 (``random.uniform(1 - delta, 1 + delta)``'s
    formula) and its patch masks ``(N,)`` int64 in ``[1, 512)`` (None with ``mask="fill"``), in that draw order."""
    lo, hi = 1.0 - delta, 1.0 + delta
    factors = lo + (hi - lo) * rng.random((num_maps, 6))
    masks = rng.integers(*MASK_VALUES, size=num_points) if mask == "random" else None
    return factors, masks


def map_sequence(probs: np.ndarray, num_points: int) -> tuple[np.ndarray, bool]:
    """The shared map choices ``(N - 1,)`` int8 of ``calculate`` (``np.random.seed(100)``; index ``M`` where no map
    is selected) and whether every step found a map."""
    return fdb._selections(probs, np.random.RandomState(CHAOS_SEED).random_sample(num_points))


def chaos_games(rows: np.ndarray, probs: np.ndarray, sel: np.ndarray, found: bool) -> np.ndarray:
    """The published ``calculate`` for perturbed systems ``rows (K, M, 6)``: points ``(K, N, 2)`` float64 from (0, 0)
    (kept), each bit for bit the published Python loop (numpy's separate multiplies and adds, in its order)."""
    k = len(rows)
    if not found:  # a step selects no map (a uniform above the last running sum): the published point repeats
        uniforms = np.random.RandomState(CHAOS_SEED).random_sample(sel.shape[0] + 1)
        return np.stack([fdb._iterate_scalar(r, probs, uniforms) for r in rows])
    pts = fdb._iterate_batch(list(rows), np.broadcast_to(sel, (k, sel.shape[0])))
    return pts.transpose(2, 0, 1)


def patch_image(pixels: np.ndarray, masks: np.ndarray | None, canvas: int) -> np.ndarray:
    """``draw_patch``'s canvas before its flip: ``(canvas, canvas)`` bool, True where grey 127 is drawn.

    pixels: ``(N, 2)`` uint16 (x, y) of ``__rescale``; masks: ``(N,)`` ints in ``[1, 512)`` (None: every cell lit,
    ``mask_mode=fill``). Cell ``(i, j)`` of point ``t``'s patch is pixel ``(y + 1 + i, x + 1 + j)`` with bit ``8 -
    (3 i + j)`` of its mask (``'{:09b}'`` reads the most significant first); the last patch to cover a pixel decides
    it, as the published pastes overwrite, and cells off the canvas are clipped as PIL's paste clips them.
    """
    n = len(pixels)
    cell = np.arange(9)
    row = pixels[:, 1].astype(np.int64)[:, None] + 1 + cell // 3
    col = pixels[:, 0].astype(np.int64)[:, None] + 1 + cell % 3
    inside = (row < canvas) & (col < canvas)
    code = np.arange(n)[:, None] * 9 + cell  # later points have larger codes
    last = np.full(canvas * canvas, -1, dtype=np.int64)
    np.maximum.at(last, (row * canvas + col)[inside], code[inside])
    written = last >= 0
    lit = np.zeros(canvas * canvas, dtype=bool)
    if masks is None:
        lit[written] = True
    else:
        bits = (np.asarray(masks, dtype=np.int64)[:, None] >> (8 - cell)) & 1
        lit[written] = bits.reshape(-1)[last[written]] == 1
    return lit.reshape(canvas, canvas)


def fill_rate(lit: np.ndarray) -> float:
    """``np.sum(img_data > 1) / img_data.size`` of the RGB image ``lit`` describes (3 channels of 127 per lit
    pixel)."""
    return float(np.int64(3 * np.count_nonzero(lit)) / (lit.size * 3))


def ndc_points(pixels: np.ndarray, canvas: int) -> np.ndarray:
    """``(N, 2)`` uint16 (x, y) pixels -> ``(N, 3)`` float32 NDC (z = 0) of their patches' centres in the saved
    image (the canvas flipped top to bottom: row ``canvas - 1 - (y + 2)``), PyTorch3D's +x left, +y up."""
    q = pixels.astype(np.float64) + PATCH_OFFSET
    x = 1.0 - (2.0 * q[:, 0] + 1.0) / canvas
    y = -(1.0 - (2.0 * q[:, 1] + 1.0) / canvas)
    return np.stack([x, y, np.zeros_like(x)], axis=1).astype(np.float32)


def generate(cfg: BankConfig, progress: bool = False) -> FamilyOutput:
    """The bank (see the module docstring). Points ``(C, N, 3)`` float32: the unperturbed fractal's drawing, one row
    expanded (stride 0). Params, first dimension ``C``: ``system (C, M, 6)`` float64 a..f of the fractal and
    ``probs (C, M)`` (both expanded), ``factors (C, M, 6)`` float64 (each category's accepted factors),
    ``fill (C,)`` float64 (its published fill rate), ``attempts (C,)`` int64 (its draws, rejected ones
    included), ``sigma_factor (C,)`` float64 (expanded). ``draws``: all attempts."""
    s, c, n = cfg.onepfrac, cfg.num_classes, cfg.num_points
    base = base_system(cfg.seed, s.sigma, s.margin, s.num_maps)
    rows, probs = base["rows"], base["probs"]
    sel, found = map_sequence(probs, n)
    own = chaos_games(rows[None], probs, sel, found)[0]
    if not np.isfinite(own).all():
        raise BankError(f"bank.seed={cfg.seed}: the fractal's own chaos game is not finite; choose another bank.seed")
    points = torch.from_numpy(ndc_points(fdb.pixel_coords(own, s.canvas, s.pad), s.canvas))
    factors = np.empty((c, s.num_maps, 6))
    fills, attempts = np.zeros(c), np.zeros(c, dtype=np.int64)
    rngs = [np.random.default_rng([cfg.seed, i]) for i in range(c)]
    pending = list(range(c))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=c, desc="onepfrac categories", unit="category")
    while pending:
        left = []
        for start in range(0, len(pending), BATCH):
            idx = pending[start:start + BATCH]
            drawn = [draw_attempt(rngs[i], s.num_maps, s.delta, n, s.mask) for i in idx]
            games = chaos_games(np.stack([rows * f for f, _ in drawn]), probs, sel, found)
            for i, (f, masks), pts in zip(idx, drawn, games):
                attempts[i] += 1
                ok = np.isfinite(pts).all()  # published: NaN rows cut, then (near-)empty and rejected
                rate = fill_rate(patch_image(fdb.pixel_coords(pts, s.canvas, s.pad), masks, s.canvas)) if ok else 0.0
                if ok and rate > s.fill_rate:
                    factors[i], fills[i] = f, rate
                    if bar is not None:
                        bar.update(1)
                elif attempts[i] >= MAX_ATTEMPTS:
                    raise BankError(f"category {i}: no draw in {MAX_ATTEMPTS} filled more than bank.onepfrac."
                                    f"fill_rate={s.fill_rate} of the canvas (last {rate:.4f}); lower it or "
                                    "bank.onepfrac.delta, or choose another bank.seed")
                else:
                    left.append(i)
        pending = left
    if bar is not None:
        bar.close()
    params = {"system": torch.from_numpy(rows)[None].expand(c, -1, -1),
              "probs": torch.from_numpy(probs)[None].expand(c, -1),
              "factors": torch.from_numpy(factors), "fill": torch.from_numpy(fills),
              "attempts": torch.from_numpy(attempts),
              "sigma_factor": torch.tensor([base["alpha"]], dtype=torch.float64).expand(c)}
    return FamilyOutput(points[None].expand(c, -1, -1), params, int(attempts.sum()))



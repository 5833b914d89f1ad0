"""Family ``fractaldb``: the categories of FractalDB (Kataoka et al., ACCV 2020) as published, drawn by our renderer.

The systems come from the published category search (:func:`dr_fdsl.families.fractaldb.search_categories`, bit
for bit; its seed is ``bank.seed``, published 1) or from a folder of published FractalDB CSVs
(``bank.fractaldb.source``), whose text is read the way ``make_fractaldb.py`` reads it (``float`` of each field,
the probabilities as written: not renormalised).

What the points reproduce exactly: each category's points are those of the published renderer
(``fractal_renderer/ifs_function.py``) drawing the category itself, i.e. ``make_fractaldb.py``'s identity weight
row (``_02_`` files) with ``--iteration`` = ``bank.num_points`` and ``--image_size`` = ``bank.fractaldb.canvas``:

* the chaos game of ``calculate``: start (0, 0), kept as the first point; the global generator reseeded with
  ``np.random.seed(100)`` for every image (so every category and image reads the same uniforms); the first map
  whose running probability sum is ``>= u``, else the previous point repeated;
* the mapping of ``__rescale``: min-max over that image's own points, 6 px pad, ``uint16`` truncation to a
  column ``col`` (from x) and row ``row`` (from y) of the ``canvas`` x ``canvas`` image;
* point ``k`` is placed at the centre of that pixel in our NDC (+x left, +y up, z = 0):
  ``x = 1 - (2 col + 1) / canvas``, ``y = 1 - (2 row + 1) / canvas``. With ``renderer.view.rotation=none``,
  ``projection=orthographic`` and ``ortho_scale=[1, 1]`` a point is drawn in the pixel of the rendered image
  that covers the published pixel ``image[row, col]`` (exactly that pixel when ``renderer.image_size`` equals
  ``canvas``).

What they do not reproduce (later issues): the published drawing, the published image orientation and its copies.
``draw_point`` sets each pixel to grey 127 and ``exe.sh``'s ``patch_gray`` pastes a 3 x 3 patch with a random
unseeded mask whose top-left pixel is ``(row + 1, col + 1)`` (its centre 2 px right of and below ours); here the
renderer draws discs of ``renderer`` colours and radii at ``renderer.image_size``. The published image is flipped
top to bottom before saving and saved in 4 flips (``_flip0`` .. ``_flip3``): the un-flipped canvas reproduced here
is its ``_flip1`` file, and ``image_aug.hflip`` / ``vflip`` of 0.5 draw the four equally often. The instances:
``bank.fractaldb.instances`` draws per image one of the 25 weight rows and one of the 4 flips, and moves each point
to the centre of its 3 x 3 patch (:mod:`dr_fdsl.families.fractaldb.instances`); the 10 patch-mask draws per row are not
reproduced (the published masks come from unseeded Python ``random``; tools/fractaldb_patch_iou.py measures what
a point drawing shares with them). The published training's random 224 px crops of its 362 px images (no
resizing) are not made: the whole canvas fills the rendered image.

Unlike the 3D families the point sets are not centred: they lie where the published image has them.
Diverging systems (non-finite points, where the published code drops rows around the first NaN) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dr_fdsl.errors import BankError
from dr_fdsl.families.base import FamilyOutput
from dr_fdsl.families.fractaldb import published as fdb

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig

MAX_MAPS = fdb.MAX_MAPS_EXCLUSIVE - 1  # the published search draws 2..7 maps
CSV_COLUMNS = 7  # a, b, c, d, e, f, probability


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One published category file (``np.savetxt`` rows ``a, b, c, d, e, f, probability``): params (maps, 6) and
    probs (maps,) float64, each value ``float()`` of its text as ``make_fractaldb.py`` reads it."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise BankError(f"{path}: cannot be read as a text CSV ({err}); pass a folder of FractalDB CSVs") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(fields) != CSV_COLUMNS or len(values) != CSV_COLUMNS or not all(np.isfinite(values)):
            raise BankError(f"{path}: line {lineno} is not 7 finite numbers (a, b, c, d, e, f, probability), as "
                            "FractalDB's ifs_search.py writes them")
        rows.append(values)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, CSV_COLUMNS)
    if not 1 <= len(table) <= MAX_MAPS or (table[:, 6] < 0).any() or table[:, 6].sum() <= 0:
        raise BankError(f"{path}: expected 1 to {MAX_MAPS} maps with non-negative probabilities (column 7) of "
                        f"positive sum, got {len(table)} rows")
    return table[:, :6].copy(), table[:, 6].copy()


def csv_files(folder: Path) -> list[Path]:
    """The category files of ``folder`` in file-name order: its ``*.csv``, else those one folder down."""
    files = sorted(p for p in folder.glob("*.csv") if p.is_file())
    if not files:
        files = sorted((p for p in folder.glob("*/*.csv") if p.is_file()), key=lambda p: (p.name, str(p)))
        names = [p.name for p in files]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise BankError(f"bank.fractaldb.source '{folder}': two sub-folders hold {dup}; point it at one folder")
    return files


def read_categories(cfg: BankConfig) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """The first ``num_classes`` categories of ``cfg.fractaldb.source``: params (maps, 6), probs (maps,) and how
    many candidates the search drew (0 when read from CSVs)."""
    f, c = cfg.fractaldb, cfg.num_classes
    if f.source == "search":
        try:
            # ~43 candidates per category at the published rate: a rate nothing reaches gives up instead of
            # searching forever, as the published search would.
            cats = fdb.search_categories(c, cfg.seed, threshold=f.rate, num_points=f.search_points,
                                         max_candidates=max(20_000, 500 * c))
        except RuntimeError as err:
            raise BankError(f"{err}; lower bank.fractaldb.rate (the published value is 0.2)") from err
        return [k.params for k in cats], [k.probs for k in cats], cats[-1].candidate + 1
    folder = Path(f.source)
    files = csv_files(folder)
    if len(files) < c:
        raise BankError(f"bank.fractaldb.source '{folder}' holds {len(files)} category CSVs, fewer than "
                        f"bank.num_classes={c}; lower bank.num_classes")
    tables = [read_csv(p) for p in files[:c]]
    return [t[0] for t in tables], [t[1] for t in tables], 0


def published_pixels(params: list[np.ndarray], probs: list[np.ndarray], num_points: int, canvas: int,
                     batch: int = 256) -> np.ndarray:
    """``(C, num_points, 2)`` uint16 (column, row) of every category's points in the published ``canvas`` image.

    The chaos games of a batch run in lockstep (:func:`fractaldb._iterate_batch`, bit-identical to the published
    loop) on the one uniform stream that ``np.random.seed(100)`` gives every published image.
    """
    uniforms = np.random.RandomState(fdb.INSTANCE_SEED).random_sample(num_points)
    out = np.empty((len(params), num_points, 2), dtype=np.uint16)
    for start in range(0, len(params), batch):
        idx = range(start, min(start + batch, len(params)))
        sel = np.empty((len(idx), num_points - 1), dtype=np.int8)
        fallback = []
        for s, i in enumerate(idx):
            sel[s], ok = fdb._selections(probs[i], uniforms)
            if not ok:  # a uniform above the last running sum: the published loop repeats the point
                fallback.append(s)
        pts = fdb._iterate_batch([params[i] for i in idx], sel)
        for s in fallback:
            pts[:, :, s] = fdb._iterate_scalar(params[idx[s]], probs[idx[s]], uniforms)
        for s, i in enumerate(idx):
            xy = pts[:, :, s]
            finite = bool(np.isfinite(xy).all())
            if not finite or not (xy.max(axis=0) > xy.min(axis=0)).all():
                what = "is not finite (it diverges)" if not finite else "has no spread in x or y"
                raise BankError(f"category {i}: its chaos game of {num_points} points {what}; this family refuses "
                                "it (the published renderer would drop rows around a NaN or draw a degenerate "
                                "image): use another bank.fractaldb.source or bank.num_points")
            out[i] = fdb.pixel_coords(xy, canvas, fdb.PAD)
    return out


def pixel_centres(pixels: np.ndarray, canvas: int) -> torch.Tensor:
    """(..., 2) (column, row) canvas pixels -> (..., 3) float32 NDC centres (+x left, +y up), z = 0."""
    px = pixels.astype(np.float64)
    x = 1.0 - (2.0 * px[..., 0] + 1.0) / canvas
    y = 1.0 - (2.0 * px[..., 1] + 1.0) / canvas
    return torch.from_numpy(np.stack([x, y, np.zeros_like(x)], axis=-1)).float()


def generate(cfg: BankConfig, progress: bool = False) -> FamilyOutput:
    """Points ``(C, N, 3)`` float32 (see the module docstring) and params ``params (C, 7, 6)`` float64 (a..f,
    zero beyond each system's maps), ``probs (C, 7)`` float64 and ``num_maps (C,)``."""
    params, probs, draws = read_categories(cfg)
    try:
        pixels = published_pixels(params, probs, cfg.num_points, cfg.fractaldb.canvas)
    except RuntimeError as err:  # e.g. a CSV whose probabilities leave the first draw without a map
        raise BankError(f"bank.fractaldb.source: a category cannot be drawn the published way ({err}); check its "
                        "probabilities (they must sum to 1)") from err
    points = pixel_centres(pixels, cfg.fractaldb.canvas)
    c = len(params)
    table = torch.zeros(c, MAX_MAPS, 6, dtype=torch.float64)
    weights = torch.zeros(c, MAX_MAPS, dtype=torch.float64)
    for i, (p, w) in enumerate(zip(params, probs)):
        table[i, :len(p)] = torch.from_numpy(p)
        weights[i, :len(w)] = torch.from_numpy(w)
    num_maps = torch.tensor([len(p) for p in params])
    return FamilyOutput(points, {"params": table, "probs": weights, "num_maps": num_maps}, draws)

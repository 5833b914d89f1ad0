"""How much of FractalDB's 3 x 3 patch drawing the point renderer reproduces, measured as IoU of lit pixels.

    python tools/fractaldb_patch_iou.py                               # the published 362 px, 200,000 points
    python tools/fractaldb_patch_iou.py --canvas 128 --points 20000   # smaller and faster

For the first categories of FractalDB-1k (the published CSVs in tests/fixtures/fractaldb) and a few instance rows,
the published pixels of each instance (``make_fractaldb.py``: weighted maps, ``np.random.seed(100)``,
``__rescale``) are drawn twice by a straightforward reimplementation of the published ``draw_patch`` (each
point pastes a 3 x 3 patch whose 9 pixels are the bits of ``random.randrange(1, 512)``, top-left pixel at
``(col + 1, row + 1)``, later pastes overwriting earlier ones, black pixels included), with two seeds of Python's
``random`` (the published run leaves it unseeded, so its masks cannot be reproduced by anyone); and once by the
point renderer from ``bank.fractaldb.instances`` (the on-device replay; each point a disc at its patch's centre
whose radius, between sqrt(2) and 2 pixels, covers exactly the 3 x 3 block). Printed per instance and as means:

* ``iou_published``: renderer's lit pixels against one published drawing's;
* ``iou_floor``: one published drawing against the other (what two runs of the published code share);
* ``iou_support``: renderer against the union of the 3 x 3 blocks (every mask bit on): the geometry alone.
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import random
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from dr_fdsl.bank import build_bank
from dr_fdsl.cli import report
from dr_fdsl.errors import DrFdslError
from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.fractaldb.instances import FractalDBInstances
from dr_fdsl.render import Scene, render_scene

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "fractaldb"


def published_patch_image(pixels: np.ndarray, canvas: int, rng: random.Random | None) -> np.ndarray:
    """``draw_patch`` before its flips: ``(canvas, canvas)`` bool, True where a pixel is grey (127).

    pixels: ``(N, 2)`` (column, row) as ``__rescale`` gives them; rng: the mask source (``randrange(1, 512)`` per
    point, in point order), or None for every bit on (the support). Later patches overwrite earlier ones.
    """
    n = len(pixels)
    masks = np.full(n, 511) if rng is None else np.array([rng.randrange(1, 512) for _ in range(n)])
    bits = (masks[:, None] >> (8 - np.arange(9))[None]) & 1  # '{:09b}'.format: bit 8 first, row-major 3 x 3
    rows = pixels[:, 1].astype(np.int64)[:, None] + 1 + np.arange(9)[None] // 3
    cols = pixels[:, 0].astype(np.int64)[:, None] + 1 + np.arange(9)[None] % 3
    inside = (rows < canvas) & (cols < canvas)  # PIL's paste clips at the border
    flat = (rows * canvas + cols)[inside]
    order = np.broadcast_to(np.arange(n)[:, None], rows.shape)[inside]
    value = bits[inside]
    # the last point to paste a pixel decides it: sort by (pixel, point) and keep each pixel's last entry
    sort = np.lexsort((order, flat))
    flat, value = flat[sort], value[sort]
    last = np.r_[flat[1:] != flat[:-1], True]
    image = np.zeros(canvas * canvas, dtype=bool)
    image[flat[last]] = value[last].astype(bool)
    return image.reshape(canvas, canvas)


def renderer_patch_image(inst: FractalDBInstances, category: int, row: int, canvas: int,
                         radius_px: float = 1.7, threshold: float = 0.05) -> np.ndarray:
    """The point renderer's drawing of that instance (the canvas as is: flip 1) at ``canvas`` px: lit = above
    ``threshold``. White discs of ``radius_px`` canvas pixels at the patch centres, alpha compositing, K = 8."""
    points = inst.points(torch.tensor([category]), torch.tensor([row]), flips=torch.tensor([1]))
    points = points.clone()
    points[..., 2] = 1.0  # any positive depth: the canvas view is orthographic
    n = points.shape[1]
    scene = Scene(points, torch.ones(1, n, 3), torch.full((1, n), radius_px * 2 / canvas), torch.zeros(1, 3, 1, 1))
    with torch.no_grad():
        image = render_scene(scene, canvas, 8, "alpha", "sort")
    return (image[0, 0] > threshold).numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def measure(canvas: int, points: int, categories: int, rows: list[int], seeds=(0, 1)) -> list[dict]:
    """IoUs per (category, row) that does not diverge; see the module docstring."""
    bank = build_bank(family="fractaldb", source=str(FIXTURE), num_classes=categories, num_points=points, seed=1,
                      canvas=canvas, instances=True, cache_dir=None)
    inst = FractalDBInstances(bank)
    out = []
    for c in range(categories):
        m = int(bank.params["num_maps"][c])
        params, probs = bank.params["params"][c, :m].numpy(), bank.params["probs"][c, :m].numpy()
        for row in rows:
            weighted = fdb.instance_params(params)[row]
            xy = fdb.chaos_game_2d(weighted, probs, points, np.random.RandomState(fdb.INSTANCE_SEED))
            if not np.isfinite(xy).all() or np.abs(xy).max() > 1e6:
                continue  # a diverging instance: the published image is a few pixels
            pixels = fdb.pixel_coords(xy, canvas)
            published = [published_patch_image(pixels, canvas, random.Random(s)) for s in seeds]
            support = published_patch_image(pixels, canvas, None)
            ours = renderer_patch_image(inst, c, row, canvas)
            out.append({"category": c, "row": row, "iou_published": iou(ours, published[0]),
                        "iou_floor": iou(published[0], published[1]), "iou_support": iou(ours, support),
                        "lit_published": float(published[0].mean()), "lit_ours": float(ours.mean())})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvas", type=int, default=fdb.INSTANCE_IMAGE_SIZE, help="published: 362")
    parser.add_argument("--points", type=int, default=fdb.INSTANCE_NUM_POINTS, help="published: 200,000")
    parser.add_argument("--categories", type=int, default=5, help="first categories of FractalDB-1k (at most 5)")
    parser.add_argument("--rows", type=int, nargs="*", default=[0, 2, 7, 12, 20], help="weight rows (0..24)")
    args = parser.parse_args(argv)
    shipped = len(sorted(FIXTURE.glob("0*.csv")))  # the published category CSVs in the fixture
    rows = len(fdb.instance_weights(fdb.PUBLISHED_WEIGHT))
    if not 1 <= args.categories <= shipped:
        parser.error(f"--categories must be 1..{shipped} (the published CSVs in {FIXTURE}), got {args.categories}")
    if not args.rows or not all(0 <= r < rows for r in args.rows):
        parser.error(f"--rows must name one or more weight rows in 0..{rows - 1}, got {args.rows}")
    try:
        results = measure(args.canvas, args.points, args.categories, args.rows)
    except DrFdslError as err:  # --canvas or --points that the bank refuses: one line, with the options given
        return report(DrFdslError(f"--canvas {args.canvas} --points {args.points}: {err}"))
    if not results:
        return report(DrFdslError(f"every instance of rows {args.rows} diverges: nothing to compare; choose other "
                                  "--rows"))
    for r in results:
        print(f"category {r['category']} row {r['row']:2d}: iou_published {r['iou_published']:.3f}  iou_floor "
              f"{r['iou_floor']:.3f}  iou_support {r['iou_support']:.3f}  lit published {r['lit_published']:.3f} "
              f"ours {r['lit_ours']:.3f}")
    for key in ("iou_published", "iou_floor", "iou_support"):
        print(f"mean {key}: {statistics.mean(r[key] for r in results):.3f} over {len(results)} instances "
              f"({args.canvas} px, {args.points} points)")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))

"""Family ``svd2d``: Anderson & Farrell's single-instance fractals: its settings (section ``bank.svd2d``) and their
checks, read at load (this module imports no torch; the generator, :mod:`dr_fdsl.families.svd2d.generator`, is
imported when a bank is built)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dr_fdsl.families.base import Family
from dr_fdsl.memory import FLOAT32, FLOAT64, INT64, index_bytes, need_bytes
from dr_fdsl.settings import finite, need

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig


@dataclass
class SVD2DConfig:
    """Family ``svd2d``: Anderson & Farrell's single-instance fractals ("Improving Fractal Pre-training", WACV
    2022): 2D maps from SVD factors whose singular values meet the sigma-factor constraint, translations
    U(-bval, bval), the chaos game from the first map's fixed point, each point's grey level the published
    per-pixel point density (dr_fdsl/families/svd2d/generator.py). Category c's system is drawn by the ported sampler
    from ``numpy.random.default_rng(bank.seed * 2**32 + c)``."""

    min_maps: int = 2  # ifs.py __main__: --min_n 2, --max_n 4 (both inclusive)
    max_maps: int = 4
    bval: float = 1.0  # translations U(-bval, bval) (--bval)
    # Side of the square image whose per-pixel point counts give each point's grey level (the published
    # IFSGenerator renders at its size, 224; MultiGenerator at size // 2, 112).
    canvas: int = 224


SEED_STRIDE = 2**32  # category c of bank.seed s draws from default_rng(s * SEED_STRIDE + c)
# Categories whose chaos games run in lockstep (each step is a few numpy operations on arrays of this length, so
# larger batches cost less per category), and steps whose coefficients are gathered at once (memory:
# BATCH x CHUNK x 6 float64 = 61 MB).
BATCH = 128


def validate(cfg: BankConfig) -> None:
    s = cfg.svd2d
    need(1 <= s.min_maps <= s.max_maps, "bank.svd2d.min_maps",
         f"need 1 <= min_maps <= max_maps, got {s.min_maps} and {s.max_maps} (published: 2 and 4)")
    need(finite(s.bval) and s.bval > 0, "bank.svd2d.bval", f"must be a positive number, got {s.bval}")
    need(s.canvas >= 2, "bank.svd2d.canvas", f"must be >= 2 pixels, got {s.canvas}")
    need(cfg.num_points >= 1, "bank.num_points", f"must be positive, got {cfg.num_points}")
    need(cfg.num_classes < SEED_STRIDE, "bank.num_classes", f"must be below 2^32, got {cfg.num_classes}")
    c, n, batch = cfg.num_classes, cfg.num_points, min(BATCH, cfg.num_classes)
    # Stored: points, grey levels and each step's map; per batch of categories: the chaos games in float64 and
    # their map choices (int64). Per system: its maps' factors, stored and during the batch's game.
    steps = c * n * (3 * FLOAT32 + FLOAT32 + index_bytes(s.max_maps)) + batch * n * (2 * FLOAT64 + INT64)
    need_bytes("bank.num_points", steps, f"{c} categories x {n} chaos-game steps")
    need_bytes("bank.svd2d.max_maps", (c + batch) * s.max_maps * 12 * FLOAT64,
               f"{c} systems of up to {s.max_maps} maps")
    # The per-pixel point counts of a category's published image (float64 canvas^2).
    need_bytes("bank.svd2d.canvas", s.canvas**2 * FLOAT64, f"a {s.canvas} x {s.canvas} px density image")


FAMILY = Family("svd2d", SVD2DConfig, validate, "dr_fdsl.families.svd2d.generator", colors=True,
                replays_maps=True, drawer="dr_fdsl.families.svd2d.instances:build")

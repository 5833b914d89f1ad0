"""Family ``ifs3d``: 3D iterated function systems kept by a variance filter: its settings (section ``bank.ifs3d``)
and their checks, read at load (this module imports no torch; the generator,
:mod:`dr_fdsl.families.ifs3d.generator`, is imported when a bank is built)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dr_fdsl.families.base import Family
from dr_fdsl.memory import FLOAT64, INT64, need_bytes
from dr_fdsl.settings import MOVED_KEYS, need

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig


@dataclass
class IFS3DConfig:
    """Family ``ifs3d``: one 3D iterated function system per category (3D-OFDB), kept by a variance filter."""

    # "uniform": the 3D-OFDB recipe, 12 parameters per map from U(-1, 1), rejection by variance.
    # "svd": contractive maps A = R1 diag(s) R2 with singular values s in (0, 1) (Anderson & Farrell).
    sampler: Literal["uniform", "svd"] = "uniform"
    min_variance: float = 0.05
    min_maps: int = 2
    max_maps: int = 7
    burn_in: int = 100


ROUND_SURVIVORS = 16384  # screened systems run through the full game together (float64 stats only)
POINTS_GROUP = 1024  # accepted systems whose points are generated together


def validate(cfg: BankConfig) -> None:
    """Fails fast on ``bank.ifs3d`` settings that cannot produce a bank."""
    f = cfg.ifs3d
    need(f.burn_in >= 0, "bank.ifs3d.burn_in", f"must be >= 0, got {f.burn_in}")
    need(1 <= f.min_maps <= f.max_maps, "bank.ifs3d.min_maps",
         f"need 1 <= min_maps <= max_maps, got {f.min_maps} and {f.max_maps}")
    # Coordinates in [-1, 1] have variance at most 1: a threshold of 1 or more is never passed.
    need(0 <= f.min_variance < 1, "bank.ifs3d.min_variance",
         f"must be in [0, 1) (clouds are scaled to [-1, 1]), got {f.min_variance}")
    # A round runs up to ROUND_SURVIVORS systems of max_maps maps at once: their maps (12 float64 each, about
    # three copies while screened and kept) and the map choices of a block of 256 steps (one byte per step, system
    # and map, then int64 per step and system).
    need_bytes("bank.ifs3d.max_maps", ROUND_SURVIVORS * (f.max_maps * (3 * 12 * FLOAT64 + 256) + 256 * INT64),
               f"{ROUND_SURVIVORS} systems of up to {f.max_maps} maps")
    # The accepted systems' points, POINTS_GROUP at once in float64 (the game's output and the normalised copy).
    need_bytes("bank.num_points", min(POINTS_GROUP, cfg.num_classes) * (f.burn_in + cfg.num_points) * 3 * FLOAT64 * 2,
               f"{min(POINTS_GROUP, cfg.num_classes)} chaos games of {f.burn_in + cfg.num_points} steps")


# bank.sampler etc. were the whole bank section before families had their own.
MOVED_KEYS.update({f"bank.{k}": f"bank.ifs3d.{k}" for k in ("sampler", "min_variance", "min_maps", "max_maps",
                                                             "burn_in")})

FAMILY = Family("ifs3d", IFS3DConfig, validate, "dr_fdsl.families.ifs3d.generator")

"""Family ``ofdb``: the categories of 3D-OFDB as published, drawn by our renderer.

The systems come from the published category search (:mod:`dr_fdsl.families.ofdb.published`, bit for bit) or from a
published parameter file (:mod:`dr_fdsl.families.ofdb.params_io`: 3D-OFDB's CSV folders, the contest's pickle). Each
category's cloud is made the published way: the chaos game from the origin on one legacy numpy stream seeded
with ``bank.seed`` and read category after category (the contest's ``generate``), min-max scaled to [-1, 1],
then centred. What differs from our ``ifs3d`` family: no burn-in is dropped, the whole cloud is min-max scaled
before centring (so a centred cloud may reach past 1 on one side), and the variance filter is the published one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dr_fdsl.errors import BankError
from dr_fdsl.families.base import FamilyOutput
from dr_fdsl.families.ofdb.params_io import read_contest_params, read_ofdb_csv_folder
from dr_fdsl.families.ofdb.published import OFDB_INSTANCE_WEIGHT, IFSSystem, point_clouds, search_categories
from dr_fdsl.families.ofdb.settings import MAX_MAPS

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig


def read_systems(cfg: BankConfig) -> tuple[list[IFSSystem], int]:
    """The first ``num_classes`` systems of ``cfg.ofdb.source`` and how many attempts the search made (0 when
    read from a file)."""
    f, c = cfg.ofdb, cfg.num_classes
    if f.source == "search":
        # A variance nothing passes would search forever, as published: bound it (about 80 attempts per category
        # at the published threshold).
        systems, attempts = search_categories(c, cfg.seed, variance=f.variance, lapack=f.lapack,
                                              max_attempts=max(100_000, 2_000 * c), return_attempts=True)
        return systems, attempts
    path = Path(f.source)
    systems = read_ofdb_csv_folder(path, limit=c) if path.is_dir() else read_contest_params(path)
    if len(systems) < c:
        raise BankError(f"bank.ofdb.source '{path}' holds {len(systems)} categories, fewer than bank.num_classes="
                        f"{c}; lower bank.num_classes")
    return systems[:c], 0


def generate(cfg: BankConfig, progress: bool = False) -> FamilyOutput:
    """Points ``(C, N, 3)`` float32 and params ``params13 (C, 7, 13)`` float64 (published rows ``a..l, prob``,
    zero beyond each system's maps) and ``num_maps (C,)``."""
    try:
        systems, attempts = read_systems(cfg)
    except RuntimeError as err:  # the bounded search gave up
        raise BankError(f"{err}; lower bank.ofdb.variance (the published value is 0.05)") from err
    weight = OFDB_INSTANCE_WEIGHT if cfg.ofdb.instance_weight == "ofdb" else None
    # One stream, category after category, as the contest's generate(); the chaos games run side by side.
    clouds = point_clouds(systems, np.random.RandomState(cfg.seed), point_num=cfg.num_points + 1, weight=weight)
    points = torch.from_numpy(clouds).float()
    if not torch.isfinite(points).all():
        raise BankError("a published system's cloud is not finite (its maps diverge); use another source")
    for i, s in enumerate(systems):  # a file may hold any number of rows; the table (and int8 choices) hold 7
        if s.num_maps > MAX_MAPS:
            raise BankError(f"bank.ofdb.source '{cfg.ofdb.source}': category {i} has {s.num_maps} maps, more than "
                            f"the {MAX_MAPS} of the published search that this family stores; remove it")
    params = torch.zeros(len(systems), MAX_MAPS, 13, dtype=torch.float64)
    for i, s in enumerate(systems):
        params[i, :s.num_maps] = torch.from_numpy(s.to_params13())
    num_maps = torch.tensor([s.num_maps for s in systems])
    return FamilyOutput(points, {"params13": params, "num_maps": num_maps}, attempts)

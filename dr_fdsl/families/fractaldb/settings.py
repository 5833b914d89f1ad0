"""Family ``fractaldb``: FractalDB's published 2D category search: its settings (section ``bank.fractaldb``) and
their checks, read at load (this module imports no torch; the generator,
:mod:`dr_fdsl.families.fractaldb.generator`, is imported when a bank is built)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dr_fdsl.families.base import Family
from dr_fdsl.memory import FLOAT64, need_bytes
from dr_fdsl.settings import ADDED, need

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig


@dataclass
class FractalDBConfig:
    """Family ``fractaldb``: FractalDB's published 2D category search (Kataoka et al., ACCV 2020), reproduced bit
    for bit, or the categories of a folder of its published CSVs. The search's seed is ``bank.seed``: the
    published ``ifs_search.py`` seeds with 1, so ``bank.seed=1`` gives the 1,000 shipped FractalDB-1k categories.
    Each category's ``bank.num_points`` points are those the published renderer draws with that many iterations,
    at the pixels of a ``canvas``-pixel image (see :mod:`dr_fdsl.families.fractaldb.generator`)."""

    # "search": run the published search. Otherwise a folder of FractalDB CSVs, read in file-name order: the
    # *.csv files in it (make_fractaldb.py's --load_root, e.g. the repository's
    # data/csv_rate0.2_category1000/csv0), or, if it holds none, those of its sub-folders (the repository's
    # data/csv_rate0.2_category1000, split into csv0..csv39). The cache is keyed by the path: after replacing a
    # file there, rebuild the bank.
    source: str = "search"
    rate: float = 0.2  # filling-rate threshold of the search (--rate; accepted when rate >= it)
    search_points: int = 100_000  # chaos-game points per candidate in the search (--numof_point)
    # Side of the published image the points are placed in (make_fractaldb.py --image_size, pad 6): 512 is its
    # default and the search's canvas; exe.sh renders FractalDB-1k at 362.
    canvas: int = 512
    # True: every image is one of the published instances of its category, drawn from its own key: one of the 25
    # rows of weights_0.4.csv (the chaos game replayed on the device with the category's map choices), one of the
    # 4 flips, and the points moved to the centres of the published 3 x 3 patches (families/fractaldb/instances.py).
    instances: bool = field(default=False, metadata=ADDED)





def validate(cfg: BankConfig) -> None:
    from dr_fdsl.families.fractaldb import published as fdb  # numpy: only when this family is chosen

    f = cfg.fractaldb
    need(0 <= f.rate <= 1, "bank.fractaldb.rate", f"is a filling rate: must be in [0, 1], got {f.rate}")
    need(f.search_points >= 2, "bank.fractaldb.search_points", f"must be >= 2, got {f.search_points}")
    need(2 * fdb.PAD < f.canvas <= 65535, "bank.fractaldb.canvas",
         f"must be in ({2 * fdb.PAD}, 65535] (6 px pad each side, uint16 pixel indices), got {f.canvas}")
    need(cfg.num_points >= 2, "bank.num_points",
         f"family fractaldb: the published min-max scaling needs at least 2 points, got {cfg.num_points}")
    # The search runs up to 512 candidates' chaos games at once, about 22 bytes per point each (generator.py);
    # the bank's games 256 categories at once (float64 points and int8 map choices), then 2 uint16 per point.
    batch = min(512, 20 * cfg.num_classes + 4)
    need_bytes("bank.fractaldb.search_points", 22 * f.search_points * batch,
               f"{batch} candidate chaos games of {f.search_points} points")
    need_bytes("bank.num_points", cfg.num_points * (min(256, cfg.num_classes) * (2 * FLOAT64 + 1)
                                                    + cfg.num_classes * 2 * 2),
               f"{cfg.num_classes} categories x {cfg.num_points} chaos-game points")
    if f.source != "search":
        need(Path(f.source).is_dir(), "bank.fractaldb.source",
             f"'{f.source}' is neither 'search' nor an existing folder of FractalDB CSVs")


FAMILY = Family("fractaldb", FractalDBConfig, validate, "dr_fdsl.families.fractaldb.generator",
                drawer="dr_fdsl.families.fractaldb.instances:build")

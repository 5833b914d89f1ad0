"""Family ``ofdb``: 3D-OFDB's published category search or parameter files: its settings (section ``bank.ofdb``) and
their checks, read at load (this module imports no torch; the generator, :mod:`dr_fdsl.families.ofdb.generator`,
is imported when a bank is built)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dr_fdsl.families.base import Family
from dr_fdsl.memory import FLOAT64, need_bytes
from dr_fdsl.settings import ADDED, need

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig


@dataclass
class OFDBConfig:
    """Family ``ofdb``: 3D-OFDB's published category search (ryoo-nakamura/OFDB), reproduced bit for bit, or the
    categories of a published parameter file. The search's seed is ``bank.seed`` (42 reproduces the contest's
    published parameter file); clouds are made the published way with ``bank.num_points + 1`` draws (9,999
    points for the published 10,000), min-max scaled to [-1, 1] and then centred."""

    # "search": run the published search. Otherwise the path of a folder of 3D-OFDB CSVs (000000.csv, ...) or of
    # the contest's parameter pickle (point_cloud_*_params.pkl; read with a restricted unpickler that admits
    # numeric arrays only). The cache is keyed by the path: after replacing a file there, rebuild the bank.
    source: str = "search"
    variance: float = 0.05  # per-axis variance the normalised cloud must exceed (3d-ofdb_render.sh's value)
    # Whose np.linalg.det rounding sets the map probabilities (only the last bits of some differ): "mkl"
    # reproduces the contest's file (MKL; also a pip numpy whose OpenBLAS runs its Sandybridge kernels),
    # "openblas" OFDB's script under a pip numpy whose OpenBLAS runs its Haswell, Zen or Nehalem kernels. On
    # AVX-512 CPUs OpenBLAS fuses one multiply-add and neither matches (201 of the 2,375 maps of the seed-42
    # search differ from "openblas"): point `source` at the CSVs written there. See docs/families.md.
    lapack: Literal["mkl", "openblas"] = "mkl"
    # "ofdb": every map's first coefficient scaled by 0.4 before the chaos game, as OFDB's instance.py does for
    # its released models (the first row of its weights_ins145.csv). "none": the searched systems as they are.
    instance_weight: Literal["none", "ofdb"] = "none"
    # "exfractal145": every image is one of 145 instances of its category, drawn from its own key: the maps scaled
    # by a row of weights_ins145.csv and the category's chaos game replayed on the device with the same map choices
    # (dr_fdsl/families/ofdb/instances.py). "none": the category's cloud itself.
    instances: Literal["none", "exfractal145"] = field(default="none", metadata=ADDED)


MAX_MAPS = 7  # the published search draws 2..7 maps


def validate(cfg: BankConfig) -> None:
    f = cfg.ofdb
    need(0 <= f.variance < 1, "bank.ofdb.variance", f"must be in [0, 1), got {f.variance}")
    # Every category's cloud is made at once in float64 with its uniforms (point_clouds); the search screens up to
    # 2,048 attempts at once, an int8 map choice and a flag per step each.
    c, n = cfg.num_classes, cfg.num_points + 1
    need_bytes("bank.num_points", c * n * (3 * FLOAT64 + FLOAT64) + 2048 * n * 2,
               f"{c} published chaos games of {n} points")
    need(f.instances == "none" or f.instance_weight == "none", "bank.ofdb.instance_weight",
         "must be 'none' with bank.ofdb.instances=exfractal145: its 145 rows include that weight (row 0)")
    if f.source != "search":
        path = Path(f.source)
        need(path.is_dir() or path.is_file(), "bank.ofdb.source",
             f"'{f.source}' is neither 'search' nor an existing CSV folder or parameter pickle")


FAMILY = Family("ofdb", OFDBConfig, validate, "dr_fdsl.families.ofdb.generator",
                drawer="dr_fdsl.families.ofdb.instances:build")

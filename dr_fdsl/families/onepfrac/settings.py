"""Family ``onepfrac``: 1p-frac (Nakamura, Tadokoro et al., ECCV 2024): its settings (section ``bank.onepfrac``) and
their checks, read at load (this module imports no torch; the generator, :mod:`dr_fdsl.families.onepfrac.generator`,
is imported when a bank is built; its docstring says what is reproduced)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dr_fdsl.families.base import Family
from dr_fdsl.memory import FLOAT64, need_bytes
from dr_fdsl.settings import finite, need

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig
    from dr_fdsl.render.settings import RendererConfig

MAX_MAPS = 7  # the lockstep chaos game's table width (FractalDB's np.random.randint(2, 8): at most 7 maps)
BATCH = 64  # categories whose chaos games run in lockstep: (N, 2, 64) float64 = 100 MB at N = 100,000


@dataclass
class OnePFracConfig:
    """Family ``onepfrac``: 1p-frac (Nakamura, Tadokoro et al., ECCV 2024): one 2D fractal drawn by Anderson &
    Farrell's SVD sampler, each category its maps' 6 parameters times U(1 - delta, 1 + delta) each, kept when its
    published 3 x 3-patch drawing fills more than ``fill_rate`` of the canvas (dr_fdsl/families/onepfrac/)."""

    sigma: float = 3.5  # the README's table (generate.sh passes 4.0); the sigma-factor is U(sigma -+ margin)
    margin: float = 0.1  # set_baseparams(args, margin=0.1)
    num_maps: int = 2  # --N
    delta: float = 0.1  # --delta: the published sweep 0.01, 0.05, 0.1, 0.2
    canvas: int = 512  # --image_size_x/y
    pad: int = 6  # --pad_size_x/y
    fill_rate: float = 0.05  # --pixel_threshold: accepted when the lit fraction exceeds it
    mask: Literal["random", "fill"] = "random"  # --mask_mode: each 3 x 3 patch's cells, random bits or all lit


def validate(cfg: BankConfig) -> None:
    s = cfg.onepfrac
    need(2 <= s.num_maps <= MAX_MAPS, "bank.onepfrac.num_maps", f"must be in [2, {MAX_MAPS}], got {s.num_maps}")
    need(finite(s.margin) and s.margin >= 0, "bank.onepfrac.margin", f"must be >= 0 (published 0.1), got {s.margin}")
    need(finite(s.sigma) and s.sigma - s.margin > 0 and s.sigma + s.margin < 3 * s.num_maps, "bank.onepfrac.sigma",
         f"the sigma-factor range [sigma - margin, sigma + margin] must lie in (0, 3 * num_maps) = (0, "
         f"{3 * s.num_maps}), got sigma {s.sigma} and margin {s.margin} (published 3.5 and 0.1)")
    need(finite(s.delta) and 0 <= s.delta < 1, "bank.onepfrac.delta",
         f"must be in [0, 1) (published 0.01 to 0.2), got {s.delta}")
    need(s.pad >= 0 and s.canvas > 2 * s.pad, "bank.onepfrac.canvas",
         f"must exceed 2 x bank.onepfrac.pad, got canvas {s.canvas} and pad {s.pad} (published 512 and 6)")
    need(finite(s.fill_rate) and 0 <= s.fill_rate < 1, "bank.onepfrac.fill_rate",
         f"must be in [0, 1) (published 0.05), got {s.fill_rate}")
    need(cfg.num_points >= 2, "bank.num_points", f"must be >= 2 (the origin and one step), got {cfg.num_points}")
    n = cfg.num_points
    # A batch of exact chaos games (float64 x, y) and their coefficient chunks, and one drawing's 9 cells per point.
    need_bytes("bank.num_points", BATCH * n * (2 + 6) * FLOAT64 + n * 9 * 3 * FLOAT64,
               f"{BATCH} chaos games of {n} points")


def renderer_rules(section: dict, r: RendererConfig) -> None:
    """A learnt perturbation (``renderer.perturbation``) starts at the bank's ``delta``, inside its budget."""
    if r.perturbation.on:
        low, high = r.perturbation.budget
        delta = section["delta"]
        need(delta > 0 and low <= delta <= high, "renderer.perturbation.budget",
             f"the learnt size starts at bank.onepfrac.delta={delta}, which must be > 0 and inside the budget, got "
             f"{list(r.perturbation.budget)}; widen it or set bank.onepfrac.delta inside it")


FAMILY = Family("onepfrac", OnePFracConfig, validate, "dr_fdsl.families.onepfrac.generator", always_instances=True,
                renderer_rules=renderer_rules, learnt_perturbation=True,
                drawer="dr_fdsl.families.onepfrac.instances:build")

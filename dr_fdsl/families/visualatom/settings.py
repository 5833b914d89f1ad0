"""Family ``visualatom``: VisualAtom's categories: its settings (section ``bank.visualatom``) and their checks, read
at load (this module imports no torch; the generator, :mod:`dr_fdsl.families.visualatom.generator`, is imported
when a bank is built)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dr_fdsl.families.base import Family
from dr_fdsl.memory import FLOAT64, INT64, need_bytes
from dr_fdsl.settings import ADDED, need

if TYPE_CHECKING:
    from dr_fdsl.config import BankConfig
    from dr_fdsl.render.settings import RendererConfig


@dataclass
class VisualAtomConfig:
    """Family ``visualatom``: the categories of VisualAtom (Takashima et al., CVPR 2023), instance 0 of each, its
    orbits drawn as lines of points on the published canvas (dr_fdsl/families/visualatom/generator.py). The knobs are
    render_VisualAtom.py's, named as there (``canvas`` is its ``image_size``); the defaults are make_VisualAtom.sh's."""

    # True: each category's parameters, instance-0 centre, grey levels and orbit vertices exactly as the published
    # run made them (bank category c is the script's category start_class + c, made by process
    # c // (numof_classes / numof_thread) with random.seed(process + 1)); bank.seed is not used. Slow: about 0.5
    # CPU-s per category, because every instance's draws before it in its process must be replayed.
    # False: categories drawn one after another from one fresh stream seeded with bank.seed, instance 0 only
    # (fast; the same distributions, not the published categories).
    replay: bool = False
    # The published run's layout (replay only): how many categories and processes, instances per category.
    numof_classes: int = 1000
    numof_instances: int = 1000
    numof_thread: int = 20
    start_class: int = 0
    canvas: int = 512  # the square canvas in pixels; it spans the renderer's whole image
    vertex_num_min: int = 200  # K, vertices per orbit
    vertex_num_max: int = 1000
    perlin_min: int = 0  # noise amplitude in [perlin_min, perlin_min + 4)
    line_width: float = 0.1  # outward step added to every vertex, in [0, line_width)
    radius_min: int = 10  # base radius in [radius_min, radius_min + 50] canvas pixels
    line_num_min: int = 1  # L, orbits per category
    line_num_max: int = 200
    oval_rate: int = 2  # ellipse aspect factors in [1, oval_rate)
    start_pos: int = 512  # centre = (canvas + randint(-start_pos, start_pos)) / 2 on each axis
    nami_1_min: int = 0  # frequencies of the two sine waves
    nami_2_min: int = 0
    nami_1_max: int = 20
    nami_2_max: int = 20
    # Ours: the polylines are sampled every `spacing` canvas pixels at most (bank.num_points then caps or pads).
    spacing: float = 0.5
    # True: every image draws, from its own key, a centre and a grey level per orbit as the published instances do;
    # the orbits' shapes stay instance 0's. The bank then samples the orbits over every part any centre can bring
    # onto the canvas (dr_fdsl/families/visualatom/instances.py).
    instances: bool = field(default=False, metadata=ADDED)





def validate(cfg: BankConfig) -> None:
    f = cfg.visualatom
    for lo, hi in (("vertex_num_min", "vertex_num_max"), ("line_num_min", "line_num_max"),
                   ("nami_1_min", "nami_1_max"), ("nami_2_min", "nami_2_max")):
        need(getattr(f, lo) <= getattr(f, hi), f"bank.visualatom.{lo}",
             f"must be <= bank.visualatom.{hi}, got {getattr(f, lo)} and {getattr(f, hi)}")
    need(f.vertex_num_min >= 3, "bank.visualatom.vertex_num_min", f"must be >= 3 (a polygon), got {f.vertex_num_min}")
    need(f.line_num_min >= 1, "bank.visualatom.line_num_min", f"must be >= 1, got {f.line_num_min}")
    need(f.canvas >= 1, "bank.visualatom.canvas", f"must be positive, got {f.canvas}")
    need(f.radius_min >= 0, "bank.visualatom.radius_min", f"must be >= 0, got {f.radius_min}")
    need(f.line_width >= 0, "bank.visualatom.line_width", f"must be >= 0, got {f.line_width}")
    need(f.oval_rate >= 1, "bank.visualatom.oval_rate", f"must be >= 1, got {f.oval_rate}")
    # Larger start_pos puts centres off the canvas, and a category may then draw nothing on it.
    need(0 <= f.start_pos <= f.canvas, "bank.visualatom.start_pos",
         f"must be in [0, bank.visualatom.canvas={f.canvas}], got {f.start_pos}")
    # The script redraws n2 while n2 == n1 != 0: a single n2 value that n1 can take (other than 0) never ends.
    need(f.nami_2_min < f.nami_2_max or f.nami_2_min == 0 or not f.nami_1_min <= f.nami_2_min <= f.nami_1_max,
         "bank.visualatom.nami_2_min", "n2 is redrawn while it equals n1 (unless n1 = 0): give it more than one "
         "value, or one n1 cannot take")
    need(math.isfinite(f.spacing) and f.spacing > 0, "bank.visualatom.spacing", f"must be positive, got {f.spacing}")
    # A category's orbits are drawn at once: (L, K) vertices of 2 float64 coordinates, in about four buffers (the
    # noise draws, the vertices, their pixels, the polyline segments); the bank keeps L grey levels per category.
    larger = "vertex_num_max" if f.vertex_num_max >= f.line_num_max else "line_num_max"
    need_bytes(f"bank.visualatom.{larger}", f.line_num_max * f.vertex_num_max * 2 * FLOAT64 * 4,
               f"{f.line_num_max} orbits (line_num_max) x {f.vertex_num_max} vertices per category")
    need_bytes("bank.visualatom.line_num_max", cfg.num_classes * f.line_num_max * INT64,
               f"{cfg.num_classes} categories x {f.line_num_max} orbit grey levels")
    if f.replay:
        need(f.numof_thread >= 1 and f.numof_classes >= f.numof_thread, "bank.visualatom.numof_thread",
             f"need 1 <= numof_thread <= numof_classes, got {f.numof_thread} and {f.numof_classes}")
        need(f.numof_instances >= 1, "bank.visualatom.numof_instances", f"must be >= 1, got {f.numof_instances}")
        need(f.start_class >= 0, "bank.visualatom.start_class", f"must be >= 0, got {f.start_class}")
        made = f.numof_thread * (f.numof_classes // f.numof_thread)
        need(cfg.num_classes <= made, "bank.num_classes",
             f"the published run makes {made} categories (bank.visualatom.numof_classes={f.numof_classes} over "
             f"numof_thread={f.numof_thread} processes); replay cannot give {cfg.num_classes}")


def renderer_rules(section: dict, r: RendererConfig) -> None:
    """Instances against the renderer's colours (at load and in ``PointRenderer``)."""
    need(not section.get("instances") or r.color_init != "bank", "renderer.color_init",
         "'bank' starts every point at instance 0's grey level, and bank.visualatom.instances multiplies the "
         "colours by each image's own orbit grey levels: use 'white' (the published greys exactly) or another")


FAMILY = Family("visualatom", VisualAtomConfig, validate, "dr_fdsl.families.visualatom.generator", colors=True,
                renderer_rules=renderer_rules, drawer="dr_fdsl.families.visualatom.instances:build")

"""Instances of a category, drawn per image from its own key and generated on the device in the step.

Published FDSL datasets render several instances of every category: 3D-OFDB / ExFractal scale one coefficient of
every map by a row of a weight file (145 rows), FractalDB does the same with 25 rows and saves 4 flips of each
image, VisualAtom moves each instance's centre and redraws every orbit's grey level. Here an image's instance is
drawn from its key (:mod:`dr_fdsl.render.keyed_random`, stream ``INSTANCE``), so ``(category, view seed)`` still
determines everything: the view order is unchanged, and a static export agrees with the in-loop renderer.

IFS instances are never stored (1,000 categories x 145 instances x 10,000 points would not fit): an instance is
the category's chaos game replayed with the instance's weighted maps and the *same* map choices as the category's
own cloud (the published codes scale the coefficients and keep the category's probabilities and its uniforms:
``instance.py`` draws from the stream ``calculate`` is given, FractalDB reseeds ``np.random.seed(100)`` for every
image), computed as a prefix scan of affine maps in float32 (:mod:`dr_fdsl.families.ifs_scan`) and normalised as
the family normalises its category clouds. Point ``t`` of every instance has the address (map-choice history) of
point ``t`` of the category's cloud, so the learnable per-point colours and radii follow the same part of the
fractal across instances. With the identity row an instance is the category's cloud (to float32 rounding).

A family's drawer lives in its package (``dr_fdsl/families/<name>/instances.py``) and its ``Family`` entry names
the drawer's builder by path (``Family.drawer``, imported on first use): a module mapping ``(class_ids (B,), keys
(B,), base (B, N, 3))`` (``base``: the bank's points of each image, as the renderer gathers them; only VisualAtom's
instances and svd2d's map jitter are made from them) to an :class:`InstanceDraw`. Family svd2d's per-image replay
with one map jittered (``renderer.augment.map_jitter``) is such a drawer too, so the renderer draws every family's
per-image points through one point operation (``instances`` in :mod:`dr_fdsl.render.point_ops`) and names no
family. This module holds what the drawers share and :func:`build_instances`; it names no family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

from dr_fdsl.families import FAMILIES
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.settings import RendererConfig, instances_on
from dr_fdsl.render.streams import Stream

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank

FLOAT32_REACH = 1e4  # raw coordinates beyond this: the replay is redone in float64 (see far_out)


class InstanceDraw(NamedTuple):
    """points: ``(B, N, 3)`` float32 cloud coordinates of each image's instance. shade: ``(B, N)`` float32 in [0, 1]
    multiplying each point's colour, or None. index: ``(B, k)`` int64, what was drawn (family-specific; see each
    module). keep: ``(B, N)`` bool, False for points the instance does not draw (their coordinates are then 0), or
    None when every point is drawn."""

    points: torch.Tensor
    shade: torch.Tensor | None
    index: torch.Tensor
    keep: torch.Tensor | None = None


def far_out(x: torch.Tensor) -> torch.Tensor:
    """Which raw trajectories ``(B, N, D)`` the float32 scan does not keep to the published float64 game: ``(R,)``
    indices of those that are not finite or reach beyond ``FLOAT32_REACH``. Such a system nearly diverges: its
    products of maps grow by many orders of magnitude before they shrink, and float32 loses the small differences
    (measured on 1,740 ExFractal instances: two clouds reaching 7e14 and 8e16 differed by 2e-4 and 9e-5 after
    normalisation, every cloud within 576 by less than 7e-6). They are redone in float64 (a few per cent of the
    images at most), which also keeps the instances the published float64 game keeps up to ~1e308."""
    return (~(torch.isfinite(x).all(dim=(1, 2)) & (x.abs().amax(dim=(1, 2)) <= FLOAT32_REACH))).nonzero()[:, 0]


def pick(keys: torch.Tensor, slot: int, count: int, slots: int = 4) -> torch.Tensor:
    """An integer in ``[0, count)`` per image from slot ``slot`` of its ``INSTANCE`` stream: ``(B,)`` int64."""
    u = rnd.uniform(keys, Stream.INSTANCE, (slots,))[:, slot]
    return (u * count).long().clamp_max(count - 1)


def map_choices(probs: list[np.ndarray], uniforms: np.ndarray,
                select: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> torch.Tensor:
    """The published map choice per step, ``(C, T)`` uint8 from ``probs`` (C arrays ``(m,)``) and ``uniforms``
    ``(C or 1, T)`` float64, each row ``select(probs[c], uniforms[c])`` (the published rule of the family's port:
    ExFractal's first map whose running probability sum is ``>= u``, ``m`` when none is, which
    :func:`~dr_fdsl.families.ifs_scan.with_identity` makes a repeat)."""
    out = np.empty((len(probs), uniforms.shape[1]), dtype=np.uint8)
    for c, p in enumerate(probs):
        out[c] = select(p, uniforms[c if len(uniforms) > 1 else 0])
    return torch.from_numpy(out)


def when_instances(drawer: Callable[[PointBank], nn.Module]) -> Callable[[PointBank, RendererConfig], nn.Module | None]:
    """The builder of a ``bank.<family>.instances`` drawer: ``drawer(bank)`` when the bank's settings ask for
    instances, else None."""
    def build(bank: PointBank, cfg: RendererConfig) -> nn.Module | None:
        return drawer(bank) if instances_on(bank.settings) else None
    return build


def build_instances(bank: PointBank, cfg: RendererConfig | None = None) -> nn.Module | None:
    """The per-image drawer that the bank's family (its ``Family.drawer``) and the renderer settings ask for, or
    None (a family without a drawer, or none asked for: no ``bank.<family>.instances``, no
    ``renderer.augment.map_jitter``). What the renderer settings cannot be combined with is refused before, by
    ``render.settings.validate_against_bank`` (map_jitter with a family that stores no maps included)."""
    cfg = cfg if cfg is not None else RendererConfig()
    family = bank.settings.get("family")
    build = FAMILIES[family].build_drawer if family in FAMILIES else None
    return build(bank, cfg) if build is not None else None

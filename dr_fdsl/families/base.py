"""The contract of a formula family (see :mod:`dr_fdsl.families`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from dr_fdsl.config import BankConfig


class FamilyOutput(NamedTuple):
    """What a family generates for ``C`` categories.

    points: ``(C, N, 3)`` float32, each set centred and inside ``[-1, 1]^3`` (2D families: z = 0; a family that
        reproduces a published 2D canvas, such as ``fractaldb`` and ``visualatom``, keeps the canvas's placement).
    params: the formula parameters behind the points, tensors whose first dimension is ``C`` (saved in the bank).
    draws: how many candidate formulas were drawn to find these ``C``.
    """

    points: torch.Tensor
    params: dict[str, torch.Tensor]
    draws: int


class Family(NamedTuple):
    """A registered formula family."""

    name: str
    validate: Callable[[BankConfig], None]  # raises ConfigError naming a bad bank.<family> key
    generate: Callable[..., FamilyOutput]  # (cfg: BankConfig, progress: bool) -> FamilyOutput
    # True when params hold each point's grey level, ``grey (C, N)`` float32 in [0, 1]: the colours that
    # ``renderer.color_init=bank`` starts from.
    colors: bool = False
    # (params) -> why a cached bank of this family cannot be used by today's code, or None: a cache file keeps its
    # name across a fix that changes how params are stored (svd2d's map indices, once uint8 at any count).
    check_cached: Callable[[dict[str, torch.Tensor]], str | None] | None = None

"""Family ``visualatom``'s per-image instances (``bank.visualatom.instances``): a centre and orbit grey levels per
image, as the published script draws them (see :mod:`dr_fdsl.render.instances`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.instances import InstanceDraw, pick, when_instances
from dr_fdsl.render.streams import Stream

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank


class VisualAtomInstances(nn.Module):
    """``bank.visualatom.instances``: each image draws a centre ``(canvas + randint(-start_pos, start_pos)) / 2`` per
    axis and a grey level ``randint(0, 255)`` per orbit, as the published script draws them for every instance;
    instance 0's orbits move with the centre (by the half-pixel rule of
    :func:`~dr_fdsl.families.visualatom.generator.half_steps`) and each point's colour is multiplied by its orbit's grey
    level / 255. ``index``: ``(B, 2)`` the centre's randint per axis (x, y)."""

    def __init__(self, bank: PointBank):
        super().__init__()
        section = bank.settings["visualatom"]
        self.canvas, self.start_pos = int(section["canvas"]), int(section["start_pos"])
        self.orbits = int(section["line_num_max"])
        self.register_buffer("centre", bank.params["centre"].float(), persistent=False)  # (C, 2) x, y pixels
        self.register_buffer("orbit", bank.params["orbit"].clone(), persistent=False)  # (C, N) int16
        self.register_buffer("half_step", bank.params["half_step"].clone(), persistent=False)  # (C, N, 2) float16

    def points(self, points: torch.Tensor, class_ids: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` instance 0's ``points`` (the bank's, of ``class_ids``) moved to the centres
        ``(canvas + draws) / 2`` (``draws (B, 2)``, x, y)."""
        twice = self.canvas + draws.float() - 2 * self.centre[class_ids]  # 2 d, an integer (centres are k / 2)
        half = torch.remainder(twice, 2)[:, None]  # 1 where d is a half-integer
        move = twice[:, None] / 2 + half * self.half_step[class_ids].float()  # (B, N, 2) canvas pixels
        xy = points[..., :2] - 2 * move / self.canvas  # NDC: x = 1 - 2 X / canvas
        return torch.cat([xy, points[..., 2:]], dim=-1)

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor, base: torch.Tensor) -> InstanceDraw:
        span = 2 * self.start_pos + 1
        draws = torch.stack([pick(keys, 2, span), pick(keys, 3, span)], dim=1) - self.start_pos
        grey = (rnd.uniform(keys, Stream.INSTANCE_GREY, (self.orbits,)) * 256).floor().clamp_max(255) / 255
        shade = torch.gather(grey, 1, self.orbit[class_ids].long())
        return InstanceDraw(self.points(base, class_ids, draws), shade, draws)


# Family visualatom's drawer builder (``Family.drawer``): the instances when bank.visualatom.instances asks for them.
build = when_instances(VisualAtomInstances)

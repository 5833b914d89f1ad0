"""Family ``ofdb``'s per-image instances (``bank.ofdb.instances=exfractal145``): ExFractal's 145 weight rows, the
category's published chaos game replayed on the device (see :mod:`dr_fdsl.render.instances`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dr_fdsl.families.ifs_scan import replay, with_identity
from dr_fdsl.families.ofdb.published import _select_maps, exfractal_weights
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.instances import InstanceDraw, far_out, map_choices, when_instances
from dr_fdsl.render.streams import Stream

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank


OFDB_TRIES = 8  # rows an image may draw before it falls back to the identity row (see OFDBInstances.forward)
IDENTITY_ROW = 6  # weights_ins145.csv's all-ones row

class OFDBInstances(nn.Module):
    """``bank.ofdb.instances=exfractal145``: row ``r`` of ``weights_ins145.csv`` (drawn per image) scales a..l of
    every map; the cloud is the category's published chaos game (its ``bank.num_points`` uniforms of the contest's
    stream ``RandomState(bank.seed)``, category after category) replayed with those maps, min-max scaled over all
    coordinates to [-1, 1], then centred with the published divisor ``N + 1``. ``index``: ``(B, 1)`` the row."""

    def __init__(self, bank: PointBank):
        super().__init__()
        c, n = bank.num_classes, bank.num_points
        table, num_maps = bank.params["params13"].double(), bank.params["num_maps"]
        probs = [table[i, :int(num_maps[i]), 12].numpy() for i in range(c)]
        uniforms = np.random.RandomState(bank.settings["seed"]).random_sample((c, n + 1))[:, :n]
        self.register_buffer("choices", map_choices(probs, uniforms, _select_maps), persistent=False)  # (C, N)
        self.register_buffer("coefs", table[..., :12].clone(), persistent=False)  # (C, M, 12) a..l
        self.register_buffer("num_maps", num_maps.clone(), persistent=False)
        self.register_buffer("weights", torch.from_numpy(exfractal_weights()), persistent=False)  # (145, 12)

    def trajectories(self, class_ids: torch.Tensor, rows: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Raw chaos-game points ``(B, N, 3)`` of instance ``rows (B,)`` of ``class_ids (B,)``, in ``dtype``."""
        coefs = self.coefs[class_ids] * self.weights[rows][:, None]  # float64, one product per coefficient
        b, m = coefs.shape[:2]
        maps = torch.cat([coefs[..., :9].view(b, m, 3, 3), coefs[..., 9:12, None]], dim=-1)  # [A | j k l]
        maps = with_identity(maps.to(dtype), self.num_maps[class_ids])
        return replay(maps, self.choices[class_ids])  # the origin not kept

    def points(self, class_ids: torch.Tensor, rows: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Instance ``rows (B,)`` of ``class_ids (B,)``: ``(B, N, 3)`` normalised, computed in ``dtype`` (float32:
        see :meth:`exact_points` for the clouds that need more)."""
        return self.normalise(self.trajectories(class_ids, rows, dtype))

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """The published min-max (all coordinates together) to [-1, 1], then centring with divisor ``N + 1``."""
        n = x.shape[1]
        lo = x.amin(dim=(1, 2), keepdim=True)
        hi = x.amax(dim=(1, 2), keepdim=True)
        scaled = (x - lo) / (hi - lo) * 2 - 1
        return scaled - scaled.sum(dim=1, keepdim=True) / (n + 1)

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor, base: torch.Tensor) -> InstanceDraw:
        # instance.py writes no file for an instance whose cloud is NaN (a diverging system): the published
        # instances of a category are the rows that stay finite. An image whose row diverges draws again from its
        # next slot, up to OFDB_TRIES rows, then takes the identity row (the category's own cloud, always finite).
        u = rnd.uniform(keys, Stream.INSTANCE, (OFDB_TRIES,))
        count = len(self.weights)
        rows = (u[:, 0] * count).long().clamp_max(count - 1)
        points = self.exact_points(class_ids, rows)
        for attempt in range(1, OFDB_TRIES + 1):
            bad = (~torch.isfinite(points).all(dim=(1, 2))).nonzero()[:, 0]
            if len(bad) == 0:
                break
            if attempt < OFDB_TRIES:
                again = (u[bad, attempt] * count).long().clamp_max(count - 1)
            else:
                again = torch.full_like(bad, IDENTITY_ROW)
            rows[bad] = again
            points[bad] = self.exact_points(class_ids[bad], again)
        return InstanceDraw(points, None, rows[:, None])

    def exact_points(self, class_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """:meth:`points` in float32, redone in float64 for the clouds that run far out (see :func:`far_out`):
        float32 ``(B, N, 3)``, NaN where even the float64 game diverges."""
        x = self.trajectories(class_ids, rows)
        redo = far_out(x)
        points = self.normalise(x)
        if len(redo):
            points[redo] = self.points(class_ids[redo], rows[redo], torch.float64).float()
        return points


# Family ofdb's drawer builder (``Family.drawer``): the instances when bank.ofdb.instances asks for them.
build = when_instances(OFDBInstances)

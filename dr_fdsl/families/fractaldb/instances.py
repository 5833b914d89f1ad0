"""Family ``fractaldb``'s per-image instances (``bank.fractaldb.instances``): one of the 25 published weight rows
and one of the 4 saved flips per image (see :mod:`dr_fdsl.render.instances`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.ifs_scan import replay, with_identity

# The replay's map choices follow the rule of ExFractal's port (first running sum >= u; m when none is): the rule
# these instances were checked with against the published generator (tests/test_instances.py).
from dr_fdsl.families.ofdb.published import _select_maps
from dr_fdsl.render.instances import InstanceDraw, far_out, map_choices, pick, when_instances

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank


PATCH_OFFSET = 2  # draw_patch pastes the 3 x 3 patch with its top-left pixel at (col + 1, row + 1): centre + 2
# FractalDB's 4 saved flips, as (x sign, y sign) of our NDC, in the order of its file names _flip0 .. _flip3: the
# published image is the canvas flipped top to bottom, then flipped as trans_type says (the bank draws _flip1).
FRACTALDB_FLIPS = ((1.0, -1.0), (1.0, 1.0), (-1.0, -1.0), (-1.0, 1.0))

class FractalDBInstances(nn.Module):
    """``bank.fractaldb.instances``: row ``r`` of ``weights_0.4.csv`` (25 rows, drawn per image) scales a..f of
    every map; the category's chaos game (the ``bank.num_points`` uniforms of ``np.random.seed(100)``, the first
    point the origin) is replayed with them and mapped to its canvas pixels as published (min-max per axis, 6 px
    pad, truncation); the point goes to the centre of the 3 x 3 patch ``draw_patch`` pastes there, and the image is
    one of the 4 flips (drawn per image). ``index``: ``(B, 2)`` row and flip (the published ``_flipK``)."""

    def __init__(self, bank: PointBank):
        super().__init__()
        c, n = bank.num_classes, bank.num_points
        self.canvas = int(bank.settings["fractaldb"]["canvas"])
        params, probs, num_maps = bank.params["params"].double(), bank.params["probs"].double(), bank.params["num_maps"]
        uniforms = np.random.RandomState(fdb.INSTANCE_SEED).random_sample(n)[None, :n - 1]
        chosen = map_choices([probs[i, :int(num_maps[i])].numpy() for i in range(c)], uniforms, _select_maps)
        self.register_buffer("choices", chosen, persistent=False)  # (C, N - 1)
        self.register_buffer("params", params.clone(), persistent=False)  # (C, M, 6) a..f
        self.register_buffer("num_maps", num_maps.clone(), persistent=False)
        weights = torch.from_numpy(fdb.instance_weights(fdb.PUBLISHED_WEIGHT))  # (25, 6)
        self.register_buffer("weights", weights, persistent=False)
        self.register_buffer("flips", torch.tensor(FRACTALDB_FLIPS), persistent=False)

    def canvas_pixels(self, class_ids: torch.Tensor, rows: torch.Tensor, dtype=torch.float32, far: bool = False):
        """Instance ``rows (B,)`` of ``class_ids (B,)`` on the canvas before truncation: ``(B, N, 2)`` (column, row)
        as the published ``__rescale`` computes them (``uint16`` of these is the pixel); non-finite where the
        replay diverges. ``far``: also return :func:`far_out` of the raw points."""
        p = self.params[class_ids] * self.weights[rows][:, None]  # float64, as published
        maps = torch.stack([p[..., [0, 1, 4]], p[..., [2, 3, 5]]], dim=-2)  # x' = a x + b y + e, y' = c x + d y + f
        maps = with_identity(maps.to(dtype), self.num_maps[class_ids])
        x = replay(maps, self.choices[class_ids])
        x = torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)  # the origin is the first published point
        lo = x.amin(dim=1, keepdim=True)
        hi = x.amax(dim=1, keepdim=True)
        shift = lo.clamp_max(0)  # published: shifted only when the minimum is negative
        span = float(self.canvas - 2 * fdb.PAD)
        pixels = (x - shift) / ((hi - shift) - (lo - shift)) * span + float(fdb.PAD)
        return (pixels, far_out(x)) if far else pixels

    def points(self, class_ids: torch.Tensor, rows: torch.Tensor, flips: torch.Tensor | None = None,
               patch: bool = True) -> torch.Tensor:
        """``(B, N, 3)`` float32 NDC (z = 0) of instance ``rows`` flipped by ``flips (B,)`` (None: the canvas as
        the bank has it), at the published pixels' centres (``patch``: at the centres of their 3 x 3 patches); not
        finite where the instance diverges even in float64."""
        pixels, redo = self.canvas_pixels(class_ids, rows, far=True)
        if len(redo):  # see far_out
            pixels = pixels.double()
            pixels[redo] = self.canvas_pixels(class_ids[redo], rows[redo], torch.float64)
        q = torch.floor(pixels) + (PATCH_OFFSET if patch else 0)
        xy = 1 - (2 * q + 1) / self.canvas
        if flips is not None:
            xy = xy * self.flips[flips][:, None]
        return torch.cat([xy, torch.zeros_like(xy[..., :1])], dim=-1).float()

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor, base: torch.Tensor) -> InstanceDraw:
        rows, flips = pick(keys, 0, len(self.weights)), pick(keys, 1, len(FRACTALDB_FLIPS))
        points = self.points(class_ids, rows, flips)
        # diverging even in float64: the published image is nearly empty (rows around the first NaN deleted, the
        # rest min-max scaled by huge values); this one draws nothing
        ok = torch.isfinite(points).all(dim=2).all(dim=1, keepdim=True)  # (B, 1)
        points = torch.where(ok[..., None], points, 0.0)
        return InstanceDraw(points, None, torch.stack([rows, flips], dim=1), ok.expand(-1, points.shape[1]))


# Family fractaldb's drawer builder (``Family.drawer``): the instances when bank.fractaldb.instances asks for them.
build = when_instances(FractalDBInstances)

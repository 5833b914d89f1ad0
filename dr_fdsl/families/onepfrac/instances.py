"""Family ``onepfrac``'s per-image replay: each category's points made in the step from its perturbation factors
(:class:`OnePFracReplay`; the family always draws through it, ``Family.always_instances``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dr_fdsl.families.ifs_scan import replay, with_identity
from dr_fdsl.families.onepfrac import generator as onepfrac
from dr_fdsl.render.instances import InstanceDraw

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank
    from dr_fdsl.config import RendererConfig


class OnePFracReplay(nn.Module):
    """Family onepfrac's categories, made per image on the device: category ``c`` is the bank's one fractal with
    its parameters ``a..f`` times the category's factors (``factors (C, M, 6)``, the probabilities the fractal's),
    its published chaos game (the origin, then the map sequence of ``np.random.seed(100)`` that every category
    shares) replayed as a float64 prefix scan, rescaled to the published canvas pixels as ``__rescale`` does (zero
    minimum, ``(canvas - 2 pad) / (max - min)``, the pad, truncation) and placed at the centres of their 3 x 3 patches
    in the saved, flipped image (:func:`dr_fdsl.families.onepfrac.generator.ndc_points`). The view seed changes
    nothing: the published dataset is one image per category. Memory: the fractal and ``C x M x 6`` factors; per
    batch two ``(B, N, 2, 3)`` float64 scan buffers. ``shade`` and ``keep`` are None; ``index``: ``(B, 1)``
    the category."""

    def __init__(self, bank: PointBank):
        super().__init__()
        section = bank.settings["onepfrac"]
        self.canvas, self.pad = int(section["canvas"]), int(section["pad"])
        probs = bank.params["probs"][0].double().numpy()
        sel, _ = onepfrac.map_sequence(probs, bank.num_points)  # index M (no map selected): the identity, a repeat
        self.register_buffer("choices", torch.from_numpy(sel.astype(np.uint8))[None], persistent=False)  # (1, N-1)
        self.register_buffer("system", bank.params["system"][:1].double().clone(), persistent=False)  # (1, M, 6)
        self.register_buffer("factors", bank.params["factors"].double().clone(), persistent=False)  # (C, M, 6)

    def canvas_pixels(self, class_ids: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, 2)`` float64 (x, y) canvas coordinates before truncation (``uint16`` of them is the published
        pixel) of ``class_ids (B,)``, or of the fractal times ``factors (B, M, 6)`` when given."""
        p = self.system * (self.factors[class_ids] if factors is None else factors)  # a *= weight_a, as published
        b, m = p.shape[:2]
        maps = torch.stack([p[..., [0, 1, 4]], p[..., [2, 3, 5]]], dim=-2)  # x' = a x + b y + e, y' = c x + d y + f
        maps = with_identity(maps, torch.full((b,), m, dtype=torch.int64, device=p.device))
        x = replay(maps, self.choices.expand(b, -1))
        x = torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)  # the origin is the first published point
        lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
        shift = lo.clamp_max(0)  # published: shifted only when the minimum is negative (here it is <= 0: the origin)
        return (x - shift) / ((hi - shift) - (lo - shift)) * float(self.canvas - 2 * self.pad) + float(self.pad)

    def points(self, class_ids: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, 3)`` float32 NDC (z = 0) at the centres of the published patches (see :meth:`canvas_pixels`)."""
        q = torch.floor(self.canvas_pixels(class_ids, factors)) + onepfrac.PATCH_OFFSET
        xy = 1 - (2 * q + 1) / self.canvas
        xy = xy * torch.tensor([1.0, -1.0], dtype=xy.dtype, device=xy.device)  # saved flipped top to bottom
        return torch.cat([xy, torch.zeros_like(xy[..., :1])], dim=-1).float()

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor, base: torch.Tensor) -> InstanceDraw:
        return InstanceDraw(self.points(class_ids), None, class_ids[:, None])


def build(bank: PointBank, cfg: RendererConfig) -> nn.Module:
    """Family onepfrac's drawer builder (``Family.drawer``): every image's points come from the replay."""
    return OnePFracReplay(bank)

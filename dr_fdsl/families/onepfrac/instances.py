"""Family ``onepfrac``'s per-image replay: each category's points made in the step from its perturbation factors
(:class:`OnePFracReplay`; the family always draws through it, ``Family.always_instances``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dr_fdsl.families.ifs_scan import replay, with_identity
from dr_fdsl.families.onepfrac import generator as onepfrac
from dr_fdsl.render.instances import InstanceDraw

if TYPE_CHECKING:
    from dr_fdsl.bank import PointBank
    from dr_fdsl.render.settings import PerturbationConfig, RendererConfig


class OnePFracReplay(nn.Module):
    """Family onepfrac's categories, made per image on the device: category ``c`` is the bank's one fractal with
    its parameters ``a..f`` times the category's factors (``factors (C, M, 6)``, the probabilities the fractal's),
    its published chaos game (the origin, then the map sequence of ``np.random.seed(100)`` that every category
    shares) replayed as a float64 prefix scan, rescaled to the published canvas pixels as ``__rescale`` does (zero
    minimum, ``(canvas - 2 pad) / (max - min)``, the pad, truncation) and placed at the centres of their 3 x 3 patches
    in the saved, flipped image (:func:`dr_fdsl.families.onepfrac.generator.ndc_points`). The view seed changes
    nothing: the published dataset is one image per category. Memory: the fractal and ``C x M x 6`` factors; per
    batch two ``(B, N, 2, 3)`` float64 scan buffers. ``shade`` and ``keep`` are None; ``index``: ``(B, 1)``
    the category.

    The learnt perturbation (``perturbation``: ``renderer.perturbation`` with a budget ``[low, high]``; None or
    ``[0, 0]``: off, and nothing above changes). Category ``c``'s factors are ``f_c = 1 + delta u_c``, ``u_c = (f_c -
    1) / delta`` its unit draw in ``[-1, 1]^(M x 6)`` (``delta``: ``bank.onepfrac.delta``). The size ``m``, shared by
    every category, is the parameter ``perturbation_logits (1, P)`` (``P``: 1, ``M`` or ``M x 6`` for ``per`` all,
    map, parameter), ``m = delta + (high - low) p`` bounded to the budget straight through and projected back into
    it after every renderer step (:meth:`project_`), as ``residual`` radii: the slope is ``high - low`` wherever
    ``m`` is, so it never saturates at a bound, and one renderer step moves it about ``renderer.lr`` of the budget.
    The factors are ``f_c + (m - delta) u_c`` (``m = delta``: ``f_c`` bit for bit). The published pixel snap
    (``floor``, a zero derivative) is removed in this mode: a point sits at its continuous canvas position, shifted
    by the patch offset less half a pixel, so that it lies within half a canvas pixel of its published patch centre
    (its mean offset from it is 0) and moves smoothly with ``m``. Gradients reach ``m`` through the scan, the
    min-max rescale and the projection.

    Why the adversarial mode (``render.settings.validate_renderer`` refuses any): descending the classifier's loss, the
    renderer's easy way is to spread the categories apart (the task made trivial, up to the budget's ``high``);
    ascending it (the objective's networks still descending it) looks for the categories that are hardest to tell
    apart, the fine geometric discrimination that 1p-frac trains, and the budget's ``low`` keeps it off the
    published collapse (CIFAR-100 top-1 19.9 at delta 0.01 against 83.0 to 84.2 from 0.05 to 0.2). A controller
    holding the accuracy at a target would need a target no paper gives; the budget here is the published flat
    range. The colour and radius tables stay frozen unless ``perturbation.tables``: the question is the perturbation
    alone, and per-category tables could carry the label code the shared perturbation cannot.
    """

    def __init__(self, bank: PointBank, perturbation: PerturbationConfig | None = None):
        super().__init__()
        section = bank.settings["onepfrac"]
        self.canvas, self.pad = int(section["canvas"]), int(section["pad"])
        probs = bank.params["probs"][0].double().numpy()
        sel, _ = onepfrac.map_sequence(probs, bank.num_points)  # index M (no map selected): the identity, a repeat
        self.register_buffer("choices", torch.from_numpy(sel.astype(np.uint8))[None], persistent=False)  # (1, N-1)
        self.register_buffer("system", bank.params["system"][:1].double().clone(), persistent=False)  # (1, M, 6)
        self.register_buffer("factors", bank.params["factors"].double().clone(), persistent=False)  # (C, M, 6)
        self.learnt = perturbation is not None and perturbation.on
        if self.learnt:
            self.delta = float(section["delta"])
            self.budget = tuple(float(v) for v in perturbation.budget)
            num_maps = self.factors.shape[1]
            self.per = perturbation.per
            size = {"all": 1, "map": num_maps, "parameter": num_maps * 6}[self.per]
            self.perturbation_logits = nn.Parameter(torch.zeros(1, size))
            self.register_buffer("unit", (self.factors - 1) / self.delta, persistent=False)  # (C, M, 6) in [-1, 1]

    def sizes(self) -> torch.Tensor:
        """The learnt sizes ``(P,)`` float64 in the budget (``P``: 1, ``M`` or ``M x 6``, map-major), read as a
        row-sparse embedding, so that the renderer's SparseAdam and sparse synchronisation take their gradient as
        they take the tables'; float64, so that ``m`` is ``delta`` exactly at logits 0."""
        low, high = self.budget
        zero = torch.zeros(1, dtype=torch.long, device=self.perturbation_logits.device)
        logits = F.embedding(zero, self.perturbation_logits, sparse=self.perturbation_logits.requires_grad)[0]
        m = self.delta + (high - low) * logits.double()
        return m + (m.clamp(low, high) - m).detach()  # renderer.bounded: the budget's value, the slope kept

    def magnitude(self) -> torch.Tensor:
        """:meth:`sizes` per map and parameter: ``(M, 6)`` float64."""
        return self.sizes().view(-1, 6 if self.per == "parameter" else 1).expand(self.factors.shape[1], 6)

    def learnt_factors(self, class_ids: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """``(B, M, 6)`` float64: the factors of ``class_ids (B,)`` at size ``magnitude (M, 6)`` (any float dtype)."""
        return self.factors[class_ids] + (magnitude.double() - self.delta) * self.unit[class_ids]

    def continuous_points(self, class_ids: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """``(B, N, 2)`` float64 NDC (x, y) of ``class_ids`` at size ``magnitude (M, 6)``, unsnapped (see the class
        docstring): differentiable in ``magnitude``."""
        q = self.canvas_pixels(class_ids, self.learnt_factors(class_ids, magnitude)) + (onepfrac.PATCH_OFFSET - 0.5)
        xy = 1 - (2 * q + 1) / self.canvas
        return xy * torch.tensor([1.0, -1.0], dtype=xy.dtype, device=xy.device)  # saved flipped top to bottom

    @torch.no_grad()
    def project_(self) -> None:
        """After a renderer step: ``m`` back into the budget (entries inside it untouched)."""
        if self.learnt:
            low, high = self.budget
            span = high - low
            if span > 0:
                self.perturbation_logits.clamp_((low - self.delta) / span, (high - self.delta) / span)

    @torch.no_grad()
    def statistics(self) -> dict[str, float]:
        """``renderer/perturbation``: the learnt size (its mean over maps and parameters; with ``per`` map or
        parameter also ``_min`` and ``_max``). Nothing when off."""
        if not self.learnt:
            return {}
        m = self.sizes()
        out = {"renderer/perturbation": float(m.mean())}
        if self.per != "all":
            out.update({"renderer/perturbation_min": float(m.min()), "renderer/perturbation_max": float(m.max())})
        return out

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
        if not self.learnt:
            return InstanceDraw(self.points(class_ids), None, class_ids[:, None])
        xy = self.continuous_points(class_ids, self.magnitude()).float()
        return InstanceDraw(torch.cat([xy, torch.zeros_like(xy[..., :1])], dim=-1), None, class_ids[:, None])


def build(bank: PointBank, cfg: RendererConfig) -> nn.Module:
    """Family onepfrac's drawer builder (``Family.drawer``): every image's points come from the replay, its
    perturbation's size learnt when ``renderer.perturbation`` asks for it."""
    return OnePFracReplay(bank, cfg.perturbation)

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

Each module here maps ``(class_ids (B,), keys (B,), base (B, N, 3))`` (``base``: the bank's points of each image, as
the renderer gathers them; only VisualAtom's instances and svd2d's map jitter are made from them) to an
:class:`InstanceDraw`. Family svd2d's per-image replay with one map jittered (``renderer.augment.map_jitter``) is
such a drawer too (:class:`MapJitterReplay`), so the renderer draws every family's per-image points through one
point operation (``instances`` in :mod:`dr_fdsl.render.point_ops`) and names no family. ``INSTANCES`` registers
each family's drawer builder by ``bank.family``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dr_fdsl.bank import PointBank
from dr_fdsl.config import PerturbationConfig, RendererConfig, instances_on
from dr_fdsl.errors import ConfigError
from dr_fdsl.families.fractaldb import published as fdb
from dr_fdsl.families.ifs_scan import replay, with_identity
from dr_fdsl.families.ofdb.published import _select_maps, exfractal_weights
from dr_fdsl.families.onepfrac import generator as onepfrac
from dr_fdsl.registry import Registry
from dr_fdsl.render import ifs_jitter
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.streams import Stream

OFDB_TRIES = 8  # rows an image may draw before it falls back to the identity row (see OFDBInstances.forward)
IDENTITY_ROW = 6  # weights_ins145.csv's all-ones row
FLOAT32_REACH = 1e4  # raw coordinates beyond this: the replay is redone in float64 (see far_out)
PATCH_OFFSET = 2  # draw_patch pastes the 3 x 3 patch with its top-left pixel at (col + 1, row + 1): centre + 2
# FractalDB's 4 saved flips, as (x sign, y sign) of our NDC, in the order of its file names _flip0 .. _flip3: the
# published image is the canvas flipped top to bottom, then flipped as trans_type says (the bank draws _flip1).
FRACTALDB_FLIPS = ((1.0, -1.0), (1.0, 1.0), (-1.0, -1.0), (-1.0, 1.0))


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


def map_choices(probs: list[np.ndarray], uniforms: np.ndarray) -> torch.Tensor:
    """The published map choice per step (first map whose running probability sum is ``>= u``; ``m`` when none
    is, which :func:`~dr_fdsl.families.ifs_scan.with_identity` makes a repeat): ``(C, T)`` uint8 from ``probs``
    (C arrays ``(m,)``) and ``uniforms`` ``(C or 1, T)`` float64."""
    out = np.empty((len(probs), uniforms.shape[1]), dtype=np.uint8)
    for c, p in enumerate(probs):
        out[c] = _select_maps(p, uniforms[c if len(uniforms) > 1 else 0])
    return torch.from_numpy(out)


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
        self.register_buffer("choices", map_choices(probs, uniforms), persistent=False)  # (C, N)
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
        chosen = map_choices([probs[i, :int(num_maps[i])].numpy() for i in range(c)], uniforms)
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


class MapJitterReplay(nn.Module):
    """Family svd2d's per-image replay (``renderer.augment.map_jitter``): each image's own system with one map
    jittered, its chaos game replayed along the category's map sequence (see :mod:`dr_fdsl.render.ifs_jitter`).
    ``shade`` and ``keep`` are None; ``index``: ``(B, 1)`` the jittered map (its factor 1 where every draw failed,
    and then the points are the bank's exactly)."""

    NEEDS = ("system", "singular_values", "num_maps", "maps")  # family svd2d's params that the replay reads

    def __init__(self, bank: PointBank, factor_range: tuple[float, float]):
        super().__init__()
        missing = [k for k in self.NEEDS if k not in bank.params]
        if missing:  # a bank cached by a development version
            raise ConfigError(f"config key 'renderer.augment.map_jitter': this svd2d bank lacks {missing} (cached by "
                              "an earlier version); rebuild it: tools/make_bank.py --config ... --rebuild")
        for k in self.NEEDS:
            self.register_buffer(f"ifs_{k}", bank.params[k].clone(), persistent=False)
        self.canvas = int(bank.settings["svd2d"]["canvas"])
        self.factor_range = factor_range

    def forward(self, class_ids: torch.Tensor, keys: torch.Tensor, base: torch.Tensor) -> InstanceDraw:
        points, jitter = ifs_jitter.jittered_points(
            base, keys, self.ifs_system[class_ids], self.ifs_singular_values[class_ids], self.ifs_num_maps[class_ids],
            self.ifs_maps[class_ids], self.canvas, self.factor_range)
        return InstanceDraw(points, None, jitter.map_index[:, None])


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

    Why the adversarial mode (``config.validate_renderer`` refuses any other): descending the classifier's loss, the
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


def _when_instances(drawer: type[nn.Module]):
    """The builder of a ``bank.<family>.instances`` drawer: the drawer when the bank's settings ask for one."""
    def build(bank: PointBank, cfg: RendererConfig) -> nn.Module | None:
        return drawer(bank) if instances_on(bank.settings) else None
    return build


def _map_jitter(bank: PointBank, cfg: RendererConfig) -> nn.Module | None:
    jitter = cfg.augment.map_jitter
    return None if jitter == (1.0, 1.0) else MapJitterReplay(bank, jitter)


# Each family's per-image drawer, by ``bank.family``: ``(bank, renderer settings) -> drawer or None``, the drawer
# a module ``(class_ids (B,), keys (B,), base (B, N, 3)) -> InstanceDraw``. A family without an entry has none.
INSTANCES: Registry[Callable[[PointBank, RendererConfig], nn.Module | None]] = Registry("instance drawer",
                                                                                        "bank.family")
INSTANCES.register("ofdb", _when_instances(OFDBInstances))
INSTANCES.register("fractaldb", _when_instances(FractalDBInstances))
INSTANCES.register("visualatom", _when_instances(VisualAtomInstances))
INSTANCES.register("svd2d", _map_jitter)
INSTANCES.register("onepfrac", lambda bank, cfg: OnePFracReplay(bank, cfg.perturbation))


def build_instances(bank: PointBank, cfg: RendererConfig | None = None) -> nn.Module | None:
    """The per-image drawer that the bank's family and the renderer settings ask for, or None (none asked for:
    no ``bank.<family>.instances``, no ``renderer.augment.map_jitter``). What the renderer settings cannot be
    combined with is refused before, by ``config.validate_against_bank`` (map_jitter with a family that stores no
    maps included)."""
    cfg = cfg if cfg is not None else RendererConfig()
    family = bank.settings.get("family")
    return INSTANCES[family](bank, cfg) if family in INSTANCES else None

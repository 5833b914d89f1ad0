"""PointWOLF as published (``renderer.augment.pointwolf_kind: published``), batched, over each image's kept points.

Kim et al., "Point Cloud Augmentation with Weighted Local Transformations" (ICCV 2021), code mlvlab/PointWOLF
``PointWOLF.py`` (commit 7011bac); the contest solution copies it (``notebooks/_point_wolf.py``) with the same
defaults, which are the contest's values: 4 anchors, farthest point sampling, sigma 0.5, rotation +-10 degrees,
scale U(1, 3), translation +-0.25. Per cloud:

1. ``M`` anchors by farthest point sampling from a random first point.
2. Per anchor: a dropout coin for each of rotation, scale and translation (probability 1/2 each kept); a random
   non-empty subset of axes (``randint(1, 8)``'s bits; bit ``j`` is coordinate ``j``). Angles U(-R, R) degrees on
   all three axes (zero when dropped); scales U(S0, S1) on the chosen axes (1 elsewhere and when dropped);
   translations U(-T, T) on the chosen axes. ``T_m(p) = ((p - a_m) R_m) S_m + t_m + a_m`` (row vectors, ``R_m`` the
   published ``Rz Ry Rx`` layout).
3. Kernel weights ``exp(-|P (a_m - p)|^2 / (2 sigma^2))`` with ``P`` a projection onto one random axis subset
   per cloud, normalised over the anchors (a softmax here: the same quotient, safe from underflow).
4. The blended cloud is centred on its mean and scaled so that its farthest point lies at 0.999999.

Dropped (sub-sampled) points take no part: they are never anchors and do not count in the mean or the maximum.
Draws are ours (per image, from its key), not numpy's; :func:`draw` returns them so that a test can feed the
same numbers to a straightforward reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.settings import AugmentConfig
from dr_fdsl.render.streams import Stream


class WolfDraws(NamedTuple):
    """One image's random numbers, batched. start: ``(B,)`` int64 first anchor (a kept point). keep_rotation,
    keep_scale, keep_shift: ``(B, M)`` float32 0/1. axes: ``(B, M, 3)`` float32 0/1 (per anchor).
    kernel_axes: ``(B, 3)`` float32 0/1. degrees, scales, shifts: ``(B, M, 3)`` float32 before dropout/axes."""

    start: torch.Tensor
    keep_rotation: torch.Tensor
    keep_scale: torch.Tensor
    keep_shift: torch.Tensor
    axes: torch.Tensor
    kernel_axes: torch.Tensor
    degrees: torch.Tensor
    scales: torch.Tensor
    shifts: torch.Tensor


def _axis_bits(u: torch.Tensor) -> torch.Tensor:
    """Uniforms ``(...)`` -> a uniform non-empty axis subset ``(..., 3)`` float32 (``randint(1, 8)``'s bits)."""
    code = (u * 7).long().clamp_max(6) + 1
    return ((code[..., None] >> torch.arange(3, device=u.device)) & 1).float()


def draw(keys: torch.Tensor, keep: torch.Tensor, cfg: AugmentConfig) -> WolfDraws:
    """Every random number of the published PointWOLF for each key; ``keep (B, N)`` bool: the first anchor is a
    uniformly drawn kept point."""
    m = cfg.pointwolf_anchors
    score = torch.where(keep, rnd.uniform(keys, Stream.WOLF_START, (keep.shape[1],)), 2.0)
    coins = rnd.uniform(keys, Stream.WOLF_DROPOUT, (m, 3)) < 0.5  # binomial(1, 0.5): 1 keeps the transform
    return WolfDraws(
        start=score.argmin(1),
        keep_rotation=coins[..., 0].float(), keep_scale=coins[..., 1].float(), keep_shift=coins[..., 2].float(),
        axes=_axis_bits(rnd.uniform(keys, Stream.WOLF_AXIS, (m,))),
        kernel_axes=_axis_bits(rnd.uniform(keys, Stream.WOLF_KERNEL_AXIS, ())),
        degrees=rnd.uniform_range(keys, Stream.WOLF_ROTATION, (-cfg.pointwolf_rotation, cfg.pointwolf_rotation),
                                  (m, 3)),
        scales=rnd.uniform_range(keys, Stream.WOLF_SCALE, cfg.pointwolf_scale, (m, 3)),
        shifts=rnd.uniform_range(keys, Stream.WOLF_SHIFT, (-cfg.pointwolf_shift, cfg.pointwolf_shift), (m, 3)))


def farthest_point_anchors(points: torch.Tensor, keep: torch.Tensor, start: torch.Tensor, m: int) -> torch.Tensor:
    """Farthest point sampling among the kept points: ``(B, N, 3)``, ``(B, N)`` bool, ``(B,)`` -> ``(B, M)`` int64.

    As published: each next anchor is the first point of largest squared distance to the anchors so far."""
    b = points.shape[0]
    rows = torch.arange(b, device=points.device)
    distance = torch.where(keep, torch.full_like(keep, 1e10, dtype=points.dtype), -1.0)
    anchors = [start]
    for _ in range(m - 1):
        d = ((points - points[rows, anchors[-1]][:, None]) ** 2).sum(-1)
        distance = torch.where(keep, torch.minimum(distance, d), distance)
        anchors.append(distance.argmax(1))
    return torch.stack(anchors, 1)


def rotation_matrices(degrees: torch.Tensor) -> torch.Tensor:
    """The published layout ``[[cz cy, cz sy sx - sz cx, cz sy cx + sz sx], [sz cy, sz sy sx + cz cy, sz sy cx -
    cz sx], [-sy, cy sx, cy cx]]`` from angles ``(..., 3)`` (x, y, z) in radians: ``(..., 3, 3)``."""
    s, c = torch.sin(degrees), torch.cos(degrees)
    sx, sy, sz = s.unbind(-1)
    cx, cy, cz = c.unbind(-1)
    rows = (cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
            sz * cy, sz * sy * sx + cz * cy, sz * sy * cx - cz * sx,
            -sy, cy * sx, cy * cx)
    return torch.stack(rows, -1).unflatten(-1, (3, 3))


def deform(points: torch.Tensor, keep: torch.Tensor, draws: WolfDraws, cfg: AugmentConfig) -> torch.Tensor:
    """The published PointWOLF with given draws: ``(B, N, 3)`` float32 -> ``(B, N, 3)`` float32."""
    b = points.shape[0]
    anchor_index = farthest_point_anchors(points, keep, draws.start, cfg.pointwolf_anchors)  # (B, M)
    anchors = points[torch.arange(b, device=points.device)[:, None], anchor_index]  # (B, M, 3)
    radians = math.pi * draws.degrees / 180.0 * draws.keep_rotation[..., None]
    scale = draws.scales * draws.keep_scale[..., None] * draws.axes
    scale = scale + (scale == 0).float()  # published: unscaled axes (dropped or not chosen) get 1
    shift = draws.shifts * draws.keep_shift[..., None] * draws.axes
    local = points[:, None] - anchors[:, :, None]  # (B, M, N, 3)
    moved = (local @ rotation_matrices(radians)) * scale[:, :, None] + shift[:, :, None] + anchors[:, :, None]
    offset = (anchors[:, :, None] - points[:, None]) * draws.kernel_axes[:, None, None]
    weight = torch.softmax(-0.5 * (offset**2).sum(-1) / cfg.pointwolf_sigma**2, dim=1)  # (B, M, N)
    blended = (weight[..., None] * moved).sum(1)  # (B, N, 3)
    kept = keep[..., None].float()
    centred = blended - (blended * kept).sum(1, keepdim=True) / kept.sum(1, keepdim=True).clamp_min(1)
    radius = torch.where(keep, centred.norm(dim=-1), 0.0).amax(1).clamp_min(1e-12)
    return (1 / radius * 0.999999)[:, None, None] * centred


def pointwolf(points: torch.Tensor, keep: torch.Tensor, keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Published PointWOLF of each image's kept points, drawn from its key: ``(B, N, 3)`` -> ``(B, N, 3)``."""
    return deform(points, keep, draw(keys, keep, cfg), cfg)

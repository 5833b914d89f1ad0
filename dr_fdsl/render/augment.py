"""Point-cloud augmentations, batched on the device, each drawn from the image's own key.

Each function takes and returns ``(B, N, 3)`` float32 cloud coordinates and is the identity at its "off"
setting, so that every augmentation can be switched on and off alone.
"""

from __future__ import annotations

import math

import torch

from dr_fdsl.config import AugmentConfig
from dr_fdsl.geometry import axis_rotation
from dr_fdsl.render import random as rnd
from dr_fdsl.render.streams import Stream


def pointwolf(points: torch.Tensor, keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """PointWOLF-style local deformation (Kim et al., 2021).

    ``M`` anchors are drawn among the points; anchor ``m`` carries a local transform ``T_m(p) = R_m S_m (p -
    a_m) + a_m + t_m``. Each point moves to the kernel-weighted blend ``sum_m k_m(p) T_m(p)`` with ``k =
    softmax_m(-|p - a_m|^2 / (2 sigma^2))``, so nearby points deform alike and the shape bends smoothly.
    """
    b, n, _ = points.shape
    m = cfg.pointwolf_anchors
    pick = (rnd.uniform(keys, Stream.WOLF_ANCHOR, (m,)) * n).long().clamp_max(n - 1)  # (B, M)
    anchors = torch.gather(points, 1, pick[..., None].expand(b, m, 3))  # (B, M, 3)
    scale = rnd.uniform_range(keys, Stream.WOLF_SCALE, cfg.pointwolf_scale, (m, 3))
    max_angle = math.radians(cfg.pointwolf_rotation)
    angles = rnd.uniform_range(keys, Stream.WOLF_ROTATION, (-max_angle, max_angle), (m, 3))
    rotation = axis_rotation(angles[..., 2], 2) @ axis_rotation(angles[..., 1], 1) @ axis_rotation(angles[..., 0], 0)
    shift = rnd.uniform_range(keys, Stream.WOLF_SHIFT, (-cfg.pointwolf_shift, cfg.pointwolf_shift), (m, 3))
    local = points[:, None] - anchors[:, :, None]  # (B, M, N, 3)
    moved = (local * scale[:, :, None]) @ rotation.transpose(-1, -2) + (anchors + shift)[:, :, None]
    kernel = torch.softmax(-(local * local).sum(-1) / (2 * cfg.pointwolf_sigma**2), dim=1)  # (B, M, N)
    return (kernel[..., None] * moved).sum(1)


def scale_and_jitter(points: torch.Tensor, keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Random isotropic scale in ``cfg.scale``, then Gaussian jitter of std ``cfg.jitter``."""
    if cfg.scale != (1.0, 1.0):
        points = points * rnd.uniform_range(keys, Stream.SCALE, cfg.scale)[:, None, None]
    if cfg.jitter > 0:
        points = points + cfg.jitter * rnd.normal(keys, Stream.JITTER, tuple(points.shape[1:]))
    return points


def random_shift(keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Camera-space shift per image, uniform in ``[-cfg.shift, cfg.shift]`` per axis: ``(B, 3)``."""
    return rnd.uniform_range(keys, Stream.SHIFT, (-cfg.shift, cfg.shift), (3,))


def subsample_mask(keys: torch.Tensor, num_points: int, cfg: AugmentConfig) -> torch.Tensor:
    """Which points survive random sub-sampling: ``(B, N)`` bool, a rate per image drawn in ``cfg.subsample``."""
    rate = rnd.uniform_range(keys, Stream.SUBSAMPLE_RATE, cfg.subsample)
    return rnd.uniform(keys, Stream.SUBSAMPLE, (num_points,)) < rate[:, None]


def mix_partners(class_ids: torch.Tensor, keys: torch.Tensor, num_classes: int, num_points: int,
                 cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The category each image mixes in, and which of its points come from it.

    A fraction ``cfg.mix`` of each image's points (chosen at random) is taken, with colours and radii, from one
    other category drawn per image.

    Returns:
        other: ``(B,)`` int64, never the image's own category (its own when mixing is off).
        mixed: ``(B, N)`` bool, True for points taken from ``other``.
    """
    if cfg.mix <= 0 or num_classes < 2:
        return class_ids, torch.zeros(len(class_ids), num_points, dtype=torch.bool, device=class_ids.device)
    offset = 1 + (rnd.uniform(keys, Stream.MIX_CLASS, ()) * (num_classes - 1)).long().clamp_max(num_classes - 2)
    other = (class_ids + offset) % num_classes
    return other, rnd.uniform(keys, Stream.MIX_POINTS, (num_points,)) < cfg.mix

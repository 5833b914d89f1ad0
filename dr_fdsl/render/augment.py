"""Point-cloud augmentations' kernels, batched on the device, each drawn from the image's own key.

The point operations of :mod:`dr_fdsl.render.point_ops` call them (and own their keys and streams); each is the
identity at its "off" setting, so that every augmentation can be switched on and off alone.
"""

from __future__ import annotations

import math

import torch

from dr_fdsl.geometry import axis_rotation
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.corrupt import uniform_ranks
from dr_fdsl.render.hsv import hsv8_to_rgb8
from dr_fdsl.render.settings import AugmentConfig
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


def coin(keys: torch.Tensor, stream: int, prob: float) -> torch.Tensor | None:
    """``(B,)`` bool, True with probability ``prob`` (``np.random.random() < p``); None when ``prob == 1``, so
    that an always-on augmentation draws nothing more than it did before the probabilities existed."""
    return None if prob >= 1 else rnd.uniform(keys, stream, ()) < prob


def random_scale(keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Isotropic scale factor per image in ``cfg.scale``, 1 where the image's scale-and-shift coin is off: ``(B,)``.
    With ``shift_frame: object`` the shift follows (``p * s + t``, the contest's ``random_shift_scale_point_cloud``)."""
    scale = rnd.uniform_range(keys, Stream.SCALE, cfg.scale)
    on = coin(keys, Stream.SCALE_SHIFT_GATE, cfg.scale_shift_prob)
    return scale if on is None else torch.where(on, scale, 1.0)


def random_shift(keys: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Shift per image, uniform in ``[-cfg.shift, cfg.shift]`` per axis, zero where the image's scale-and-shift
    coin is off: ``(B, 3)``. Camera space, or object space with ``shift_frame: object``."""
    shift = rnd.uniform_range(keys, Stream.SHIFT, (-cfg.shift, cfg.shift), (3,))
    on = coin(keys, Stream.SCALE_SHIFT_GATE, cfg.scale_shift_prob)
    return shift if on is None else shift * on[:, None]


def subsample_mask(keys: torch.Tensor, num_points: int, cfg: AugmentConfig) -> torch.Tensor:
    """Which points survive random sub-sampling: ``(B, N)`` bool, a rate per image drawn in ``cfg.subsample``.

    Each point survives with probability rate, or with ``cfg.subsample_exact`` exactly ``int(N * rate)`` of them
    do, a uniform random subset (the points of smallest key-drawn score). With ``cfg.subsample_prob < 1`` an image
    is sub-sampled only when its coin says so."""
    rate = rnd.uniform_range(keys, Stream.SUBSAMPLE_RATE, cfg.subsample)
    score = rnd.uniform(keys, Stream.SUBSAMPLE, (num_points,))
    if cfg.subsample_exact:
        count = torch.floor(num_points * rate.double())  # int(N * rate), the rate's float32 value exact in float64
        keep = uniform_ranks(score) < count[:, None]
    else:
        keep = score < rate[:, None]
    on = coin(keys, Stream.SUBSAMPLE_GATE, cfg.subsample_prob)
    return keep if on is None else keep | ~on[:, None]


def depth_hue_colors(toward_camera: torch.Tensor, keep: torch.Tensor, keys: torch.Tensor, cfg: AugmentConfig
                     ) -> torch.Tensor:
    """The contest's ``colorize_point_cloud`` (random mode), its hue from depth: ``(B, N, 3)`` float32 in [0, 1].

    Published: ``hue = uint8((z - z_min) / (z_max - z_min) * 255)`` over the cloud's points, one saturation
    ``uint8(U(0.3, 1) * 255)`` and value ``uint8(U(0.5, 1) * 255)`` per cloud, OpenCV's 8-bit HSV -> RGB (its hue
    wraps past 180), divided by 255. The contest's z is the rotated cloud's, and its camera sits on +z looking
    down -z: z is the coordinate toward the camera, so the nearest point has hue 255 and the farthest 0.

    Args:
        toward_camera: ``(B, N)`` each point's coordinate along the axis from the cloud to the camera (minus the
            camera-space z: ``-(R p)_z``). keep: ``(B, N)`` bool, the points drawn (the range is theirs).
    """
    z = toward_camera
    inf = torch.tensor(math.inf, device=z.device)
    low = torch.where(keep, z, inf).amin(1, keepdim=True)
    high = torch.where(keep, z, -inf).amax(1, keepdim=True)
    hue = torch.trunc(((z - low) / (high - low)).nan_to_num(0.0).clamp(0, 1) * 255)
    u = rnd.uniform(keys, Stream.DEPTH_HUE, (2,))
    (s0, s1), (v0, v1) = cfg.depth_hue_saturation, cfg.depth_hue_value
    sat = torch.trunc((s0 + (s1 - s0) * u[:, 0]) * 255)
    val = torch.trunc((v0 + (v1 - v0) * u[:, 1]) * 255)
    hsv = torch.stack([hue, sat[:, None].expand_as(hue), val[:, None].expand_as(hue)], -1)
    return hsv8_to_rgb8(hsv).float() / 255


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

"""Viewpoints and projection to PyTorch3D's NDC space, drawn per image from its key.

Conventions (PyTorch3D's): NDC x points left and y up, the image spans [-1, 1] on both axes (square images),
pixel ``(row i, column j)`` has its centre at ``x = 1 - (2 j + 1) / W``, ``y = 1 - (2 i + 1) / H``; z is the
depth in front of the camera (points with z <= 0 are not drawn).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from dr_fdsl.geometry import euler_rotation, quaternion_to_matrix
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.settings import ViewConfig
from dr_fdsl.render.streams import Stream

NEAR = 1e-2  # points closer than this to the camera plane are dropped (their projection would explode)


class Views(NamedTuple):
    """One camera per image.

    rotation: ``(B, 3, 3)`` float32, applied to cloud coordinates (``x_cam = R x``).
    distance: ``(B,)`` float32, camera to centroid, cloud units.
    focal: ``(B,)`` float32, NDC units per cloud unit at depth 1 (perspective) or per cloud unit (orthographic).
    """

    rotation: torch.Tensor
    distance: torch.Tensor
    focal: torch.Tensor


def sample_views(keys: torch.Tensor, cfg: ViewConfig) -> Views:
    """Draws a camera per key: ``keys (B,)`` int64 -> :class:`Views`."""
    b = keys.shape[0]
    if cfg.rotation == "so3":
        q = rnd.normal(keys, Stream.ROTATION, (4,))
        rotation = quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True))
    elif cfg.rotation == "euler":
        angles = [rnd.uniform_range(keys, Stream.ROTATION + i, tuple(math.radians(a) for a in rng))
                  for i, rng in enumerate((cfg.azimuth, cfg.elevation, cfg.roll))]
        rotation = euler_rotation(*angles)
    else:
        rotation = torch.eye(3, device=keys.device).expand(b, 3, 3)
    distance = rnd.uniform_range(keys, Stream.DISTANCE, cfg.distance)
    if cfg.projection == "perspective":
        fov = rnd.uniform_range(keys, Stream.FOCAL, tuple(math.radians(a) for a in cfg.fov))
        focal = 1.0 / torch.tan(fov / 2)
    else:
        focal = rnd.uniform_range(keys, Stream.FOCAL, cfg.ortho_scale)
    return Views(rotation, distance, focal)


def project(points: torch.Tensor, views: Views, projection: str, pytorch3d_arithmetic: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-space points to NDC.

    Args:
        points: ``(B, N, 3)`` float32 cloud coordinates (already augmented), centred near the origin.
        views: cameras from :func:`sample_views`.
        projection: ``"perspective"`` or ``"orthographic"``.
        pytorch3d_arithmetic: perspective x, y as ``(x * focal) / depth`` (PyTorch3D's order of operations) rather
            than ``x * (focal / depth)``; the same value up to one rounding.

    Returns:
        ndc: ``(B, N, 3)`` float32, NDC x, y and depth z.
        visible: ``(B, N)`` bool, False for points at or behind the near plane.
    """
    cam = points @ views.rotation.transpose(1, 2)
    depth = cam[..., 2] + views.distance[:, None]
    visible = depth > NEAR
    if projection == "perspective" and pytorch3d_arithmetic:
        xy = (cam[..., :2] * views.focal[:, None, None]) / depth.clamp_min(NEAR)[..., None]
    elif projection == "perspective":
        xy = cam[..., :2] * (views.focal[:, None] / depth.clamp_min(NEAR))[..., None]
    else:
        xy = cam[..., :2] * views.focal[:, None, None]
    return torch.cat([xy, depth[..., None]], dim=-1), visible

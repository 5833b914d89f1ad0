"""Rotations shared by the fractal sampler and the renderer's viewpoints."""

from __future__ import annotations

import torch


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` (w, x, y, z) to rotation matrices ``(..., 3, 3)``.

    A normalised 4D Gaussian is uniform on the unit sphere, so ``q = g / |g|`` gives rotations uniform over SO(3).
    """
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def axis_rotation(angle: torch.Tensor, axis: int) -> torch.Tensor:
    """Rotations by ``angle (...)`` radians about coordinate axis 0, 1 or 2: ``(..., 3, 3)``."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == 1:
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def euler_rotation(azimuth: torch.Tensor, elevation: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Camera-style rotation ``R = R_z(roll) R_x(elevation) R_y(azimuth)``, angles in radians: ``(..., 3, 3)``."""
    return axis_rotation(roll, 2) @ axis_rotation(elevation, 0) @ axis_rotation(azimuth, 1)

"""The render package's data types and constants.

Every cloud in a batch has the same number of points ``N``, so a point's packed index is ``b * N + n``. Points
that must not be drawn (sub-sampled away, behind the camera) are moved to ``OFFSCREEN`` instead of being removed,
which keeps the batch rectangular and every index stable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dr_fdsl.render.settings import MAX_POINTS_PER_PIXEL  # noqa: F401  (a renderer setting's bound, checked at load)

OFFSCREEN = 1.0e4  # NDC coordinate for points that must not be drawn (far outside every pixel and bin)


class Scene(NamedTuple):
    """A batch of clouds ready to draw.

    points: ``(B, N, 3)`` float32, NDC x, y (``OFFSCREEN`` for hidden points) and depth z > 0.
    colors: ``(B, N, 3)`` float32 in [0, 1], may require grad.
    radii: ``(B, N)`` float32 > 0, NDC units, may require grad.
    background: ``(B, 3, H, W)`` or ``(B, 3, 1, 1)`` float32 in [0, 1].
    """

    points: torch.Tensor
    colors: torch.Tensor
    radii: torch.Tensor
    background: torch.Tensor


class Fragments(NamedTuple):
    """PyTorch3D's per-pixel K nearest points, front to back.

    idx: ``(B, H, W, K)`` int64 packed point index, -1 where empty.
    zbuf: ``(B, H, W, K)`` float32 depth, -1 where empty.
    dists: ``(B, H, W, K)`` float32 squared NDC distance from pixel centre to point centre, -1 where empty.
    """

    idx: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor

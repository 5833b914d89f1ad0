"""PyTorch3D's ``rasterize_points`` with a per-point radius: naive kernel on CPU, binned (never overflowing) on CUDA.

PyTorch3D's rasteriser only decides *which* points cover a pixel: radii go in detached, and their gradients come
from the fragment weights (:mod:`dr_fdsl.render.composite`).
"""

from __future__ import annotations

import torch
from pytorch3d.renderer.points import rasterize_points
from pytorch3d.structures import Pointclouds

from dr_fdsl.render.structures import Fragments


def bin_occupancy_bound(points: torch.Tensor, radii: torch.Tensor, image_size: int, bin_size: int) -> int:
    """An upper bound on the points any coarse-rasteriser bin receives (footprints padded by one pixel).

    PyTorch3D's CUDA coarse pass silently drops points beyond ``max_points_per_bin`` and its fine pass costs
    in proportion to that setting, so the tightest safe value is the real occupancy, counted here.

    Args:
        points: ``(B, N, 3)`` NDC points; radii: ``(B, N)`` NDC radii.
    Returns:
        The largest number of points whose padded footprint overlaps one bin of one image.
    """
    s = image_size
    nbins = -(-s // bin_size)
    # Continuous pixel coordinates of the centres (column from x, row from y), radius in pixels plus padding.
    col = ((1 - points[..., 0]) * s - 1) / 2
    row = ((1 - points[..., 1]) * s - 1) / 2
    reach = radii * s / 2 + 1
    lo_c = ((col - reach) / bin_size).floor().clamp(0, nbins - 1).long()
    hi_c = ((col + reach) / bin_size).floor().clamp(-1, nbins - 1).long()
    lo_r = ((row - reach) / bin_size).floor().clamp(0, nbins - 1).long()
    hi_r = ((row + reach) / bin_size).floor().clamp(-1, nbins - 1).long()
    inside = (col + reach >= 0) & (col - reach <= s - 1) & (row + reach >= 0) & (row - reach <= s - 1)
    counts = torch.zeros(points.shape[0], nbins * nbins, dtype=torch.long, device=points.device)
    span = int(max((hi_c - lo_c).max(), (hi_r - lo_r).max(), 0)) + 1
    for dr in range(span):
        for dc in range(span):
            r, c = lo_r + dr, lo_c + dc
            hit = inside & (r <= hi_r) & (c <= hi_c)
            counts.scatter_add_(1, (r * nbins + c).clamp(0, nbins * nbins - 1), hit.long())
    return int(counts.max())


def rasterize(points: torch.Tensor, radii: torch.Tensor, image_size: int, points_per_pixel: int) -> Fragments:
    """PyTorch3D ``rasterize_points`` with a per-point radius, as :class:`Fragments`.

    On CPU the rasteriser is the naive one (``bin_size=0``: binned CPU rasterisation is not implemented). On
    CUDA it is coarse-to-fine with ``max_points_per_bin`` set from :func:`bin_occupancy_bound`, so no bin can
    overflow and no point is silently dropped.

    Args:
        points: ``(B, N, 3)`` float32 NDC points. radii: ``(B, N)`` float32, used detached.
    """
    if points.dtype != torch.float32:
        raise TypeError(f"PyTorch3D's point kernels are float32 only; got points of {points.dtype}")
    radii = radii.detach().contiguous()  # shared radius tables arrive expanded (stride 0)
    if points.is_cuda:
        bin_size = 2 ** max((image_size - 1).bit_length() - 4, 4)  # PyTorch3D's default: 2^(ceil(log2 S) - 4)
        max_per_bin = max(1, bin_occupancy_bound(points, radii, image_size, bin_size))
    else:
        bin_size, max_per_bin = 0, None
    idx, zbuf, dists = rasterize_points(Pointclouds(points=points), image_size, radii, points_per_pixel,
                                        bin_size=bin_size, max_points_per_bin=max_per_bin)
    return Fragments(idx.long(), zbuf, dists)

"""Pure functions that draw a batch of point clouds: rasterise with PyTorch3D, weight, composite.

Every cloud in a batch has the same number of points ``N``, so a point's packed index is ``b * N + n``. Points
that must not be drawn (sub-sampled away, behind the camera) are moved far outside the image instead of being
removed, which keeps the batch rectangular and every index stable.

Gradients: PyTorch3D's rasteriser only decides *which* points cover a pixel (radii go in detached). A fragment's
weight ``w = 1 - d^2 / r^2`` is computed here from the point's own radius, so radii get exact gradients through
the weights, and colours through the compositor. ``w`` falls to zero at the disk's edge, so the image is
continuous in the radius even where a pixel enters or leaves a disk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pytorch3d.renderer.compositing import alpha_composite, norm_weighted_sum
from pytorch3d.renderer.points import rasterize_points
from pytorch3d.structures import Pointclouds

OFFSCREEN = 1.0e4  # NDC coordinate for points that must not be drawn (far outside every pixel and bin)
MAX_POINTS_PER_PIXEL = 150  # PyTorch3D's kernels hold at most this many fragments per pixel


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


def fragment_weights(fragments: Fragments, radii: torch.Tensor) -> torch.Tensor:
    """Each fragment's weight ``w = 1 - d^2 / r^2`` from its own point's radius: ``(B, H, W, K)`` in [0, 1].

    Only occupied slots are gathered: clamping empty slots (-1) to index 0 would route every one of them to
    point 0, whose backward then scatters tens of millions of zeros into one row (measured 600x slower).

    Args:
        radii: ``(B, N)`` float32 radii (with grad), in packed order ``b * N + n``.
    """
    valid = fragments.idx >= 0
    r = radii.reshape(-1)[fragments.idx[valid]]
    weights = torch.zeros_like(fragments.dists)
    weights[valid] = (1 - fragments.dists[valid] / (r * r)).clamp(0, 1)
    return weights


def composite(fragments: Fragments, weights: torch.Tensor, colors: torch.Tensor, background: torch.Tensor,
              compositor: str = "alpha") -> torch.Tensor:
    """Front-to-back compositing with a soft background: ``(B, 3, H, W)`` float32 in [0, 1].

    ``alpha``: ``sum_k w_k prod_{j<k} (1 - w_j) c_k + T bg`` with transmittance ``T = prod_k (1 - w_k)``.
    ``norm_weighted``: ``(1 - T) sum_k w_k c_k / sum_k w_k + T bg``.

    Args:
        weights: ``(B, H, W, K)`` from :func:`fragment_weights`. colors: ``(B, N, 3)`` in [0, 1].
        background: ``(B, 3, H, W)`` or ``(B, 3, 1, 1)``.
    """
    idx = fragments.idx.permute(0, 3, 1, 2)  # PyTorch3D's compositors take (B, K, H, W)
    alphas = weights.permute(0, 3, 1, 2)
    features = colors.reshape(-1, 3).t()  # (3, B * N) packed
    transmittance = torch.prod(1 - alphas, dim=1, keepdim=True)  # (B, 1, H, W)
    if compositor == "alpha":
        image = alpha_composite(idx, alphas, features)
    elif compositor == "norm_weighted":
        image = (1 - transmittance) * norm_weighted_sum(idx, alphas, features)
    else:
        raise ValueError(f"renderer.compositor must be 'alpha' or 'norm_weighted', got {compositor!r}")
    return (image + transmittance * background).clamp(0, 1)


def render_scene(scene: Scene, image_size: int, points_per_pixel: int, compositor: str = "alpha",
                 backend: str = "pytorch3d") -> torch.Tensor:
    """Rasterise (``backend``: ``"pytorch3d"`` or ``"sort"``), weight and composite a :class:`Scene`:
    ``(B, 3, H, W)`` float32 in [0, 1]."""
    if backend == "sort":
        from dr_fdsl.render.sort_raster import rasterize_sorted  # imports Fragments from this module

        fragments = rasterize_sorted(scene.points, scene.radii, image_size, points_per_pixel)
    else:
        fragments = rasterize(scene.points, scene.radii, image_size, points_per_pixel)
    weights = fragment_weights(fragments, scene.radii)
    return composite(fragments, weights, scene.colors, scene.background, compositor)

"""A point rasteriser built from tensor ops: expand each point to its pixel footprint, sort, keep K per pixel.

It produces PyTorch3D's fragments (for every pixel the K nearest points front to back: packed index, depth,
squared distance; -1 where empty) with the same float32 arithmetic for pixel centres and distances, so the same
weights, compositing and gradients apply. Its cost grows with the number of (point, covered pixel) pairs,
not with pixels x points as PyTorch3D's naive CPU kernel does, and it needs no bins, so nothing can overflow.

Ties in depth are broken by packed point index (PyTorch3D leaves their order to its kernel).
"""

from __future__ import annotations

import torch

from dr_fdsl.render.structures import Fragments


def pixel_centre(index: torch.Tensor, size: int) -> torch.Tensor:
    """NDC centre of pixel column (or row) ``index`` as PyTorch3D computes it in float32 (+x left, +y up)."""
    return -1.0 + (2.0 * (size - 1 - index) + 1.0) / size


def rasterize_sorted(points: torch.Tensor, radii: torch.Tensor, image_size: int, points_per_pixel: int) -> Fragments:
    """Same contract as :func:`dr_fdsl.render.raster_pytorch3d.rasterize`.

    Args:
        points: ``(B, N, 3)`` float32 NDC points (z >= 0 is drawn). radii: ``(B, N)`` float32, used detached.
    """
    b, n, _ = points.shape
    s, k = image_size, points_per_pixel
    device = points.device
    radii = radii.detach()
    x, y, z = points.detach().unbind(-1)
    # Continuous pixel coordinates of each centre and its radius in pixels.
    col = ((1 - x) * s - 1) / 2
    row = ((1 - y) * s - 1) / 2
    reach = radii * s / 2
    drawn = (z >= 0) & (col + reach >= -1) & (col - reach <= s) & (row + reach >= -1) & (row - reach <= s)
    flat = drawn.reshape(-1).nonzero().squeeze(1)  # only points that can touch the image, packed index b * N + n
    empty = Fragments(*(torch.full((b, s, s, k), -1, dtype=dt, device=device)
                        for dt in (torch.long, torch.float32, torch.float32)))
    if flat.numel() == 0:
        return empty
    col, row, reach, px, py, pz, r2 = (t.reshape(-1)[flat] for t in (col, row, reach, x, y, z, radii ** 2))
    # Candidate pixels: a square around the centre one pixel wider than the disk; the exact test decides.
    first_col = (col - reach).floor().clamp(0, s - 1).long()
    first_row = (row - reach).floor().clamp(0, s - 1).long()
    span = int((2 * reach).ceil().max()) + 2
    offsets = torch.arange(span, device=device)
    cols = first_col[:, None] + offsets  # (P, span): the square's columns, then its rows
    rows = first_row[:, None] + offsets
    # Per axis, then broadcast to (P, span rows, span cols): the same float32 operations as on the full square.
    dx = pixel_centre(cols.float(), s) - px[:, None]
    dy = pixel_centre(rows.float(), s) - py[:, None]
    dist2 = (dy * dy)[:, :, None] + (dx * dx)[:, None, :]
    hit = (dist2 < r2[:, None, None]) & ((rows < s)[:, :, None] & (cols < s)[:, None, :])
    owner, hit_row, hit_col = hit.nonzero(as_tuple=True)  # point-major: ties keep packed order
    image = flat[owner] // n
    pixel = (image * s + first_row[owner] + hit_row) * s + first_col[owner] + hit_col
    depth = pz[owner]
    dist2 = dist2[owner, hit_row, hit_col]
    packed = flat[owner]
    # Sort by (pixel, depth): depths are >= 0, so their float32 bit patterns order like the values, except -0.0
    # (drawn, as PyTorch3D draws it), whose sign bit makes its pattern negative: adding +0.0 turns it into +0.0.
    key = pixel * 2**31 + (depth + 0.0).view(torch.int32).long()
    order = torch.sort(key, stable=True).indices
    pixel, depth, dist2, packed = pixel[order], depth[order], dist2[order], packed[order]
    # Rank of each fragment within its pixel: position minus the position where its pixel's run starts.
    position = torch.arange(pixel.numel(), device=device)
    starts = torch.ones_like(pixel, dtype=torch.bool)
    starts[1:] = pixel[1:] != pixel[:-1]
    rank = position - torch.cummax(torch.where(starts, position, 0), dim=0).values
    keep = rank < k
    slot = pixel[keep] * k + rank[keep]
    idx, zbuf, dists = (t.view(-1) for t in empty)
    idx[slot], zbuf[slot], dists[slot] = packed[keep], depth[keep], dist2[keep]
    return empty

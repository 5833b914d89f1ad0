"""A slow, obvious renderer for tests: the same fragment maths as dr_fdsl.render, one image at a time.

For every pixel centre it measures the squared distance to every point, keeps the points whose disk covers it
(d^2 < r^2, in front of the camera), sorts them by depth, keeps the nearest K and composites front to back.
No PyTorch3D: it checks the fast path's rasterisation, weights, compositing and gradients.
"""

import torch


def pixel_centres(size: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC centres of a size x size image, PyTorch3D convention (+x left, +y up): each ``(size * size,)``."""
    step = (2 * torch.arange(size, dtype=dtype) + 1) / size
    ys, xs = torch.meshgrid(1 - step, 1 - step, indexing="ij")
    return xs.reshape(-1), ys.reshape(-1)


def reference_render(points, colors, radii, background, image_size, k, compositor="alpha"):
    """points (B, N, 3), colors (B, N, 3), radii (B, N), background (B, 3, h, w) -> (B, 3, S, S)."""
    xs, ys = pixel_centres(image_size, points.dtype)
    images = []
    for b in range(points.shape[0]):
        p, c, r = points[b], colors[b], radii[b]
        d2 = (xs[:, None] - p[None, :, 0]) ** 2 + (ys[:, None] - p[None, :, 1]) ** 2  # (pixels, N)
        covers = (d2 < r[None] ** 2) & (p[None, :, 2] >= 0)
        depth = torch.where(covers, p[None, :, 2].expand_as(d2), torch.full_like(d2, float("inf")))
        order = depth.argsort(dim=1, stable=True)[:, :k]  # nearest first
        taken = torch.gather(covers, 1, order)
        w = torch.where(taken, 1 - torch.gather(d2, 1, order) / r[order] ** 2, torch.zeros_like(d2[:, :k]))
        w = w.clamp(0, 1)
        feats = c[order]  # (pixels, K, 3)
        transmittance = torch.prod(1 - w, dim=1)  # (pixels,)
        if compositor == "alpha":
            before = torch.cumprod(torch.cat([torch.ones_like(w[:, :1]), 1 - w[:, :-1]], dim=1), dim=1)
            rgb = (w * before)[..., None].mul(feats).sum(1)
        else:
            total = w.sum(1, keepdim=True)
            rgb = (w[..., None] * feats).sum(1) / total.clamp_min(1e-4) * (1 - transmittance)[:, None]
        bg = background[b].expand(3, image_size, image_size).reshape(3, -1).t()
        image = rgb + transmittance[:, None] * bg
        images.append(image.t().reshape(3, image_size, image_size).clamp(0, 1))
    return torch.stack(images)

"""Pixel operations of the published image pipelines, batched on the device, one set of parameters per image.

Every function takes ``images (B, C, H, W)`` float32 **in 0..255 units** (uint8 levels, not clipped to integers:
rendered images are continuous and gradients flow through every operation that is not a lookup table) and
per-image parameters as ``(B,)`` tensors, and returns the same shape. Each follows one published definition:

* PIL (what timm's RandAugment and RandomResizedCrop call): :func:`pil_affine`, :func:`pil_resized_crop`, the
  enhance blends and the ``ImageOps`` lookup tables. PIL rounds each result to an integer level (truncating blends
  and affine samples, rounding resizes); these functions keep the fraction, so on uint8 inputs they differ from PIL
  by less than one level where PIL's result is a rounded continuous map (tests/test_image_ops.py).
* OpenCV as albumentations 1.3.1 calls it (the contest's pipeline): :func:`cv2_warp_affine`, :func:`remap` with
  ``BORDER_REFLECT_101``, the HSV conversion of uint8 images (hue in 0..180). OpenCV quantises sampling positions
  to 1/32 pixel and hue to 180 levels; these functions are the exact continuous maps.

Coordinates: ``x`` is the column, ``y`` the row. "Index" coordinates (OpenCV's) put pixel centres at integers;
PIL's put them at +0.5 and are converted where PIL's matrices are taken.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------- sampling


def _cubic_pil_transform(d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """PIL's ``Image.transform`` bicubic (Geometry.c ``BICUBIC``: the cubic convolution with a = -1) at fraction
    ``d`` in [0, 1): the weights of the four taps at offsets -1, 0, 1, 2."""
    d2, d3 = d * d, d * d * d
    return -d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3


def _border(index: torch.Tensor, size: int, border: str) -> torch.Tensor:
    if border == "clamp":  # PIL: neighbours outside the image repeat the edge pixel
        return index.clamp(0, size - 1)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)  # OpenCV BORDER_REFLECT_101: gfedcb|abcdefgh|gfedcba
    index = index.abs() % period
    return torch.where(index >= size, period - index, index)


def sample(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel: str = "bilinear",
           border: str = "reflect101", fill: torch.Tensor | None = None) -> torch.Tensor:
    """Interpolated values of ``images (B, C, H, W)`` at index coordinates ``x, y (B, H', W')``.

    ``kernel``: ``bilinear`` or ``bicubic`` (PIL's transform cubic, a = -1). ``border``: ``reflect101`` (OpenCV's
    default of warpAffine/remap in albumentations) or ``clamp`` (PIL). ``fill (B, C)``: where a position lies
    outside the image (PIL's test: outside [-0.5, size - 0.5)), the output is ``fill`` instead. Returns
    ``(B, C, H', W')``; differentiable in ``images`` (and in ``x, y`` almost everywhere).
    """
    b, c, h, w = images.shape
    if kernel == "bilinear" and h > 1 and w > 1:
        # grid_sample's kernel, with pixel centres at the grid's corners: clamping the position ("border") reads
        # the same values as clamping the two neighbours (PIL), and reflecting the position about the edge pixel
        # centres ("reflection") the same as reflecting each neighbour (BORDER_REFLECT_101), since the
        # interpolation is symmetric about them. gather_sample computes the same, several times slower.
        grid = torch.stack([x * (2.0 / (w - 1)) - 1, y * (2.0 / (h - 1)) - 1], -1).to(images.dtype)
        out = F.grid_sample(images, grid, mode="bilinear", align_corners=True,
                            padding_mode="border" if border == "clamp" else "reflection")
    else:
        out = gather_sample(images, x, y, kernel, border)
    if fill is not None:
        outside = (x < -0.5) | (x >= w - 0.5) | (y < -0.5) | (y >= h - 0.5)
        out = torch.where(outside.unsqueeze(1), fill.to(out.dtype)[:, :, None, None], out)
    return out


def gather_sample(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel: str,
                  border: str) -> torch.Tensor:
    """:func:`sample` without fill, tap by tap: each of the 4 (bilinear) or 16 (bicubic) neighbours gathered
    with its border rule and weighted."""
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w)
    x0, y0 = x.floor(), y.floor()
    dx, dy = x - x0, y - y0
    if kernel == "bilinear":
        offsets, wx, wy = (0, 1), (1 - dx, dx), (1 - dy, dy)
    elif kernel == "bicubic":
        offsets, wx, wy = (-1, 0, 1, 2), _cubic_pil_transform(dx), _cubic_pil_transform(dy)
    else:
        raise ValueError(f"kernel must be bilinear or bicubic, got {kernel!r}")
    x0, y0 = x0.long(), y0.long()
    cols = [_border(x0 + o, w, border) for o in offsets]
    rows = [_border(y0 + o, h, border) * w for o in offsets]
    out = images.new_zeros(b, c, *x.shape[1:])
    for row, weight_y in zip(rows, wy):
        for col, weight_x in zip(cols, wx):
            taps = flat.gather(2, (row + col).reshape(b, 1, -1).expand(b, c, -1)).view_as(out)
            out = out + (weight_y * weight_x).unsqueeze(1) * taps
    return out


def _pixel_grid(b: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64),
                            torch.arange(w, device=device, dtype=torch.float64), indexing="ij")
    return xs.expand(b, h, w), ys.expand(b, h, w)


def pil_affine(images: torch.Tensor, matrix: torch.Tensor, kernel: str, fill: torch.Tensor) -> torch.Tensor:
    """``Image.transform(size, AFFINE, data, resample, fillcolor)`` per image: ``matrix (B, 6)`` float64 is PIL's
    ``data`` (a, b, c, d, e, f), mapping an output point (x, y) in PIL coordinates to the input point
    (a x + b y + c, d x + e y + f); PIL evaluates it at each pixel centre. ``fill (B, C)``."""
    b, _, h, w = images.shape
    xs, ys = _pixel_grid(b, h, w, images.device)
    m = matrix.view(b, 6, 1, 1)
    # Output pixel (col, row) has PIL coordinates (col + 0.5, row + 0.5); the input point back to index coords.
    x_in = m[:, 0] * (xs + 0.5) + m[:, 1] * (ys + 0.5) + m[:, 2] - 0.5
    y_in = m[:, 3] * (xs + 0.5) + m[:, 4] * (ys + 0.5) + m[:, 5] - 0.5
    # The cubic overshoots; PIL clips each sample to [0, 255].
    return sample(images, x_in.float(), y_in.float(), kernel, "clamp", fill).clamp(0, 255)


def pil_rotate_matrix(degrees: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """PIL ``Image.rotate(degrees)`` (counter-clockwise, about the image centre, no expand) as ``(B, 6)``
    transform data, rounded to 15 decimals as PIL rounds it."""
    angle = -torch.deg2rad(degrees.double())
    cos, sin = torch.round(angle.cos(), decimals=15), torch.round(angle.sin(), decimals=15)
    cx, cy = w / 2.0, h / 2.0
    return torch.stack([cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy], 1)


def cv2_warp_affine(images: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """``cv2.warpAffine(img, M, (w, h), INTER_LINEAR, BORDER_REFLECT_101)`` per image: ``forward (B, 2, 3)`` float64
    maps input index coordinates to output ones; each output pixel samples the input at the inverse map."""
    b, _, h, w = images.shape
    inverse = torch.linalg.inv(torch.cat([forward, forward.new_tensor([0, 0, 1]).expand(b, 1, 3)], 1))[:, :2]
    xs, ys = _pixel_grid(b, h, w, images.device)
    m = inverse.reshape(b, 6, 1, 1)
    x_in = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    y_in = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    return sample(images, x_in.float(), y_in.float(), "bilinear", "reflect101")


def remap(images: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """``cv2.remap(img, map_x, map_y, INTER_LINEAR, BORDER_REFLECT_101)``: ``map_x, map_y (B, H, W)`` index
    coordinates of the input point that each output pixel takes."""
    return sample(images, map_x.float(), map_y.float(), "bilinear", "reflect101")


# ------------------------------------------------------------------------------------------------------ resizing

def _pil_filter(x: torch.Tensor, kernel: str) -> torch.Tensor:
    x = x.abs()
    if kernel == "bilinear":
        return (1 - x).clamp_min(0)
    a = -0.5  # PIL Resample.c bicubic_filter (not Geometry.c's transform cubic)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def pil_resize_weights(start: torch.Tensor, length: torch.Tensor, size_in: int, size_out: int,
                       kernel: str) -> torch.Tensor:
    """PIL's resampling coefficients (Resample.c ``precompute_coeffs``) for resizing the span
    ``[start, start + length)`` of an axis of ``size_in`` pixels to ``size_out``: ``(B, size_out, size_in)``
    float32, zero outside each image's span. ``start, length (B,)`` integer pixels. Downscaling widens the filter
    by the scale (PIL's antialiasing)."""
    support = {"bilinear": 1.0, "bicubic": 2.0}[kernel]
    device = start.device
    first, length = start.double()[:, None, None], length.double()[:, None, None]
    scale = length / size_out
    filter_scale = scale.clamp_min(1.0)
    centre = (torch.arange(size_out, device=device, dtype=torch.float64)[None, :, None] + 0.5) * scale
    reach = support * filter_scale
    # PIL's taps: (int)(centre -/+ reach + 0.5) ((int) truncates toward zero), clipped to the span; at most
    # ceil(reach) * 2 + 1 of them, so only that band is computed.
    low = torch.trunc(centre - reach + 0.5).clamp_min(0)
    high = torch.minimum(torch.trunc(centre + reach + 0.5), length)
    taps = low + torch.arange(int(math.ceil(reach.max().item())) * 2 + 1, device=device, dtype=torch.float64)
    weights = _pil_filter((taps - centre + 0.5) / filter_scale, kernel) * (taps < high)
    weights = weights / weights.sum(2, keepdim=True)  # a span of >= 1 pixel always holds its centre's tap
    index = (taps + first).long().clamp_max(size_in - 1)  # taps past the span have weight 0
    dense = torch.zeros(start.shape[0], size_out, size_in, device=device, dtype=torch.float32)
    return dense.scatter_add_(2, index, weights.float())


def pil_resized_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                     width: torch.Tensor, size: tuple[int, int], kernel: str) -> torch.Tensor:
    """torchvision's ``resized_crop`` of a PIL image: ``img.crop((left, top, left + width, top + height))
    .resize(size, kernel)`` per image. ``top, left, height, width (B,)`` integer pixels; ``size`` (H', W')."""
    _, _, h, w = images.shape
    rows = pil_resize_weights(top, height, h, size[0], kernel).to(images.dtype)  # (B, H', H)
    cols = pil_resize_weights(left, width, w, size[1], kernel).to(images.dtype)  # (B, W', W)
    # (float32 weights: 1e-7 relative, far below PIL's own rounding to levels)
    # PIL resamples horizontally, then vertically, clipping each pass to [0, 255] (bicubic overshoots).
    wide = torch.einsum("bchw,bqw->bchq", images, cols).clamp(0, 255)
    return torch.einsum("bph,bchq->bcpq", rows, wide).clamp(0, 255)


# ---------------------------------------------------------------------------------------------- colour (PIL)

def luma(images: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` of RGB (ITU-R 601-2: 19595, 38470, 7471 / 65536) without its rounding:
    ``(B, 1, H, W)``."""
    weights = images.new_tensor([19595.0, 38470.0, 7471.0]).view(1, 3, 1, 1) / 65536.0
    return (images * weights).sum(1, keepdim=True)


def blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance``'s ``Image.blend(degenerate, image, factor)``, clipped to [0, 255]; ``factor (B,)``."""
    f = factor.to(images.dtype).view(-1, 1, 1, 1)
    return (degenerate + f * (images - degenerate)).clamp(0, 255)


def smooth(images: torch.Tensor) -> torch.Tensor:
    """``ImageFilter.SMOOTH`` (3 x 3 kernel 1 1 1 / 1 5 1 / 1 1 1, divided by 13); PIL leaves the border pixels as
    they are."""
    c = images.shape[1]
    kernel = images.new_tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]).div(13).expand(c, 1, 3, 3)
    inner = F.conv2d(images, kernel, groups=c)
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0): each channel's darkest level to 0 and brightest to 255, linearly;
    channels of one level stay as they are."""
    lo = images.amin(dim=(2, 3), keepdim=True)
    hi = images.amax(dim=(2, 3), keepdim=True)
    spread = hi - lo
    stretched = (images - lo) * (255.0 / torch.where(spread > 0, spread, 1.0))
    return torch.where(spread > 0, stretched.clamp(0, 255), images)


def levels(images: torch.Tensor) -> torch.Tensor:
    """The uint8 level each value stands for (the lookup-table operations read levels): ``(B, C, H, W)`` int64."""
    return images.detach().round().clamp(0, 255).long()


def equalize(images: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize`` per channel: PIL's lookup table from the channel's histogram of levels (step = (pixels -
    count of the top level) // 255, entry i = (step // 2 + pixels below i) // step); a channel with one level or a
    zero step is left as it is. A lookup table: no gradient."""
    b, c, h, w = images.shape
    q = levels(images).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=images.device).scatter_add_(1, q, torch.ones_like(q))
    top = torch.where(hist > 0, torch.arange(256, device=images.device), -1).amax(1)  # highest level present
    step = (h * w - hist.gather(1, top[:, None])[:, 0]) // 255
    below = hist.cumsum(1) - hist  # pixels below each level
    lut = (step[:, None] // 2 + below) // step.clamp_min(1)[:, None]
    identity = ((hist > 0).sum(1) <= 1) | (step == 0)
    lut = torch.where(identity[:, None], torch.arange(256, device=images.device), lut.clamp(0, 255))
    return lut.gather(1, q).view(b, c, h, w).to(images.dtype)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``ImageOps.posterize``: keep the top ``bits (B,)`` bits of each level (8 or more: unchanged)."""
    drop = (8 - bits.clamp(0, 8)).view(-1, 1, 1, 1)
    q = levels(images)
    return ((q >> drop) << drop).to(images.dtype)


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``ImageOps.solarize``: levels at or above ``threshold (B,)`` inverted."""
    t = threshold.to(images.dtype).view(-1, 1, 1, 1)
    return torch.where(images < t, images, 255 - images)


def solarize_add(images: torch.Tensor, add: torch.Tensor, threshold: float = 128) -> torch.Tensor:
    """timm's ``solarize_add``: ``add (B,)`` to the levels below ``threshold``, capped at 255."""
    a = add.to(images.dtype).view(-1, 1, 1, 1)
    return torch.where(images < threshold, (images + a).clamp_max(255), images)


# -------------------------------------------------------------------------------------------- colour (OpenCV)

def rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's ``COLOR_RGB2HSV`` of uint8 images, continuous: hue in [0, 180) (degrees / 2), saturation and value
    in [0, 255]. ``images (B, 3, H, W)`` -> three ``(B, H, W)``."""
    r, g, b = images.unbind(1)
    value = images.amax(1)
    spread = value - images.amin(1)
    saturation = torch.where(value > 0, 255 * spread / torch.where(value > 0, value, 1.0), 0.0)
    safe = torch.where(spread > 0, spread, 1.0)
    hue = torch.where(value == r, 60 * (g - b) / safe,
                      torch.where(value == g, 120 + 60 * (b - r) / safe, 240 + 60 * (r - g) / safe))
    hue = torch.where(spread > 0, hue, 0.0)
    hue = torch.where(hue < 0, hue + 360, hue)
    return hue / 2, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``COLOR_HSV2RGB`` for uint8 units (hue in [0, 180)), continuous: ``(B, 3, H, W)``. Written as
    channel = v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + hue / 30) mod 6 for n = 5, 3, 1 (red, green, blue):
    the six-sector table in one expression."""
    sixths = hue / 30.0  # degrees / 60
    vs = value * saturation / 255.0
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + sixths, 6.0)
        channels.append(value - vs * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, 1)


def shift_hsv(images: torch.Tensor, hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """albumentations' ``shift_hsv`` of uint8 images: hue shifted modulo 180, saturation and value shifted and
    clipped to [0, 255]; shifts ``(B,)`` in those units."""
    h, s, v = rgb_to_hsv(images)
    h = torch.remainder(h + hue.view(-1, 1, 1).to(h.dtype), 180.0)
    s = (s + saturation.view(-1, 1, 1).to(s.dtype)).clamp(0, 255)
    v = (v + value.view(-1, 1, 1).to(v.dtype)).clamp(0, 255)
    return hsv_to_rgb(h, s, v)


def brightness_contrast(images: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """albumentations' ``brightness_contrast_adjust`` of uint8 images with ``brightness_by_max``: ``alpha * level +
    beta * 255``, clipped to [0, 255]; ``alpha, beta (B,)``."""
    a, b = alpha.to(images.dtype).view(-1, 1, 1, 1), beta.to(images.dtype).view(-1, 1, 1, 1)
    return (images * a + b * 255).clamp(0, 255)


# --------------------------------------------------------------------------------------- distortions (OpenCV)

def optical_distortion_maps(k: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, h: int,
                            w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """albumentations' ``optical_distortion``: ``cv2.initUndistortRectifyMap`` with camera matrix (fx = w, fy = h,
    cx = w / 2 + dx, cy = h / 2 + dy), distortion (k, k, 0, 0, 0) and no new camera matrix, for which OpenCV takes
    the same focal lengths with the principal point at ((w - 1) / 2, (h - 1) / 2). ``k, dx, dy (B,)`` -> index maps
    ``(B, H, W)`` float64."""
    b = k.shape[0]
    xs, ys = _pixel_grid(b, h, w, k.device)
    x = (xs - (w - 1) * 0.5) / w
    y = (ys - (h - 1) * 0.5) / h
    r2 = x * x + y * y
    kk = k.double().view(-1, 1, 1)
    radial = 1 + (kk + kk * r2) * r2  # 1 + k1 r^2 + k2 r^4
    return w * x * radial + (w * 0.5 + dx.double().view(-1, 1, 1)), \
        h * y * radial + (h * 0.5 + dy.double().view(-1, 1, 1))


def _grid_axis(steps: torch.Tensor, size: int, num_steps: int) -> torch.Tensor:
    """One axis of albumentations' ``grid_distortion``: ``steps (B, num_steps + 1)`` -> ``(B, size)`` float64."""
    step = size // num_steps
    out = steps.new_zeros(steps.shape[0], size, dtype=torch.float64)
    prev = steps.new_zeros(steps.shape[0], dtype=torch.float64)
    for idx in range(num_steps + 1):
        start = idx * step
        end = start + step
        if end > size:
            end, cur = size, torch.full_like(prev, float(size))
        else:
            cur = prev + step * steps[:, idx].double()
        n = end - start
        if n > 0:  # np.linspace(prev, cur, n): n = 1 gives [prev]
            t = torch.arange(n, device=steps.device, dtype=torch.float64) / max(n - 1, 1)
            out[:, start:end] = prev[:, None] + (cur - prev)[:, None] * t
        prev = cur
    return out


def grid_distortion_maps(steps_x: torch.Tensor, steps_y: torch.Tensor, h: int, w: int,
                         num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """albumentations' ``grid_distortion`` (not normalised): ``steps_x, steps_y (B, num_steps + 1)``, each
    ``1 + U(-limit, limit)`` -> index maps ``(B, H, W)`` float64."""
    xx, yy = _grid_axis(steps_x, w, num_steps), _grid_axis(steps_y, h, num_steps)
    return xx[:, None, :].expand(-1, h, w), yy[:, :, None].expand(-1, h, w)


def rotation_matrix_2d(angle: torch.Tensor, scale: torch.Tensor, cx: float, cy: float) -> torch.Tensor:
    """``cv2.getRotationMatrix2D((cx, cy), angle, scale)`` per image: ``(B, 2, 3)`` float64, angle in degrees
    (counter-clockwise on screen)."""
    rad = torch.deg2rad(angle.double())
    alpha, beta = scale.double() * rad.cos(), scale.double() * rad.sin()
    return torch.stack([torch.stack([alpha, beta, (1 - alpha) * cx - beta * cy], 1),
                        torch.stack([-beta, alpha, beta * cx + (1 - alpha) * cy], 1)], 1)


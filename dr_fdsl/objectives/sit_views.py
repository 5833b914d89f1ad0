"""SiT's views and corruptions, drawn from each image's key (pure functions on the device).

Published procedure (Sara-Ahmed/SiT at 1aacd6a): each view goes through the transform (colour jitter among it),
is turned by a random quarter-turn (``datasets_utils.RandomRotation``, whose label the rotation head predicts), and
on the GPU ``engine.distortImages`` corrupts it in four stages, each always applied:

1. ``rgb2gray_patch``: one random rectangle made grey (the mean of the channels);
2. ``smooth_patch``: one random rectangle blurred by a Gaussian (odd kernel 3..15, sigma in [0.1, 5.1), reflected
   at the rectangle's border, as kornia's ``GaussianBlur2d`` pads the cropped rectangle);
3. ``drop_rand_patches``: rectangles (sides 5%..25% of the image) filled with N(0, 1) noise until they have
   covered a fraction U(0, 0.3) of the pixels (overlaps counted twice, as there);
4. ``drop_rand_patches(X, X_rep)``: the same with the pixels of another image of the batch, chosen uniformly
   (nothing when it picks the image itself).

Every draw here is a hash of the image's key (:mod:`dr_fdsl.render.keyed_random`), so an image gets the same rotation,
jitter and corruption in every run and from either source (in-loop or static). What differs from the published
code, and why:

* the donor of stage 4 gives its clean view (published: the batch is corrupted in place, so a donor earlier in
  the batch gives its corrupted pixels and a later one its clean pixels: an artefact of loop order);
* the noise of overlapping noise rectangles is one N(0, 1) image per view (the same distribution: i.i.d. noise);
* colour jitter works on float images (published: on PIL's 8-bit images);
* blurring a rectangle narrower than half the kernel reflects repeatedly (kornia refuses it; at 224 px the
  smallest rectangle, 11 px, never is);
* random resized crops and flips of the published transform are not applied: the views come from the camera.
"""

from __future__ import annotations

import math

import torch

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.streams import Stream

SIT_SALT = 0x536954  # "SiT": the keys differ from the renderer's and mim's for the same (category, view seed)
_M32 = 0xFFFFFFFF
# The six orders of brightness (0), contrast (1) and saturation (2): torchvision's ColorJitter applies its
# operations in a random order (hue is left out when its range is 0).
_ORDERS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def copy_index(class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
    """How many earlier images of the batch have the same (category, view seed): ``(B,)`` int64. Copies of one
    render (``data.repeated_aug``) are told apart by it; the batch is the same in every source, so is this."""
    same = (class_ids[:, None] == class_ids[None]) & (view_seeds[:, None] == view_seeds[None])
    return torch.tril(same, diagonal=-1).sum(1)


def view_keys(class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per image and copy: ``(B,)`` int64."""
    copies = copy_index(class_ids, view_seeds)
    return rnd.image_keys(class_ids, view_seeds, salt=SIT_SALT) ^ ((copies * 0x9E3779B9) & _M32)


def _randint(u: torch.Tensor, low, high) -> torch.Tensor:
    """numpy's ``randint(low, high)`` (integers in [low, high)) from uniforms ``u`` in [0, 1)."""
    span = torch.as_tensor(high, device=u.device) - low
    return low + torch.minimum((u * span).floor().long(), span - 1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``rgb_to_grayscale``: ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def color_jitter(images: torch.Tensor, keys: torch.Tensor, strength: float) -> torch.Tensor:
    """torchvision's ``ColorJitter(strength, strength, strength)`` per image: brightness, contrast and saturation
    factors in ``[max(0, 1 - s), 1 + s]``, applied in a random order. ``(B, 3, H, W)`` in [0, 1] -> same."""
    if strength == 0:
        return images
    u = rnd.uniform(keys, Stream.SIT_JITTER, (4,))
    low = max(0.0, 1.0 - strength)
    factors = (low + (1.0 + strength - low) * u[:, :3]).view(-1, 3, 1, 1, 1)
    order = _ORDERS.to(keys.device)[_randint(u[:, 3], 0, 6)]  # (B, 3)
    x = images
    for position in range(3):
        f = [factors[:, i] for i in range(3)]
        brightness = (f[0] * x).clamp(0, 1)
        mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
        contrast = (f[1] * x + (1 - f[1]) * mean).clamp(0, 1)
        saturation = (f[2] * x + (1 - f[2]) * _luma(x)).clamp(0, 1)
        op = order[:, position].view(-1, 1, 1, 1)
        x = torch.where(op == 0, brightness, torch.where(op == 1, contrast, saturation))
    return x


def rotation_labels(keys: torch.Tensor) -> torch.Tensor:
    """Each image's quarter-turn, 0..3: ``(B,)`` int64 (``RandomRotation``'s ``np.random.randint(0, 4)``)."""
    return _randint(rnd.uniform(keys, Stream.SIT_ROTATION, ()), 0, 4)


def rotate(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Turns image b by ``labels[b]`` quarter-turns clockwise, as ``RandomRotation`` does (label 1:
    ``rot90(-1)``, 2: twice that, 3: ``rot90(1)``). Images must be square. ``(B, C, H, W)`` -> same."""
    out = images
    for k in (1, 2, 3):
        out = torch.where((labels == k).view(-1, 1, 1, 1), torch.rot90(images, -k, (2, 3)), out)
    return out


def _spans(u_start, u_size, side: int, tol: int, largest: int):
    """Rectangle rows (or columns) as the published code draws them: start in [0, side - tol), end =
    min(start + size, side) with size in [tol, largest)."""
    start = _randint(u_start, 0, side - tol)
    end = torch.clamp(start + _randint(u_size, tol, largest), max=side)
    return start, end


def _inside(start: torch.Tensor, end: torch.Tensor, side: int) -> torch.Tensor:
    """``(...,)`` spans -> ``(..., side)`` bool: which rows (columns) lie in [start, end)."""
    index = torch.arange(side, device=start.device)
    return (index >= start[..., None]) & (index < end[..., None])


def rectangle(keys: torch.Tensor, stream: int, size: int, tol: int) -> tuple[torch.Tensor, ...]:
    """One rectangle per image, any size up to the whole image (``rgb2gray_patch``, ``smooth_patch``):
    rows ``r0, r1`` and columns ``c0, c1``, ``(B,)`` int64 each."""
    u = rnd.uniform(keys, stream, (4,))
    r0, r1 = _spans(u[:, 0], u[:, 2], size, tol, size)
    c0, c1 = _spans(u[:, 1], u[:, 3], size, tol, size)
    return r0, r1, c0, c1


def box_mask(r0, r1, c0, c1, size: int) -> torch.Tensor:
    """``(B,)`` spans -> ``(B, 1, size, size)`` bool."""
    return (_inside(r0, r1, size)[:, :, None] & _inside(c0, c1, size)[:, None, :])[:, None]


def grey_rectangle(x: torch.Tensor, keys: torch.Tensor, tol: int) -> torch.Tensor:
    """Stage 1: one rectangle replaced by the mean of the channels."""
    mask = box_mask(*rectangle(keys, Stream.SIT_GREY, x.shape[-1], tol), x.shape[-1])
    return torch.where(mask, x.mean(dim=1, keepdim=True), x)


def gaussian_taps(keys: torch.Tensor, max_kernel: int, max_sigma: float) -> torch.Tensor:
    """Each image's normalised 1D Gaussian (kornia's ``get_gaussian_kernel1d``), centred in ``max_kernel`` taps
    (zeros outside its own odd size ``2 * (randint(3, max_kernel + 1) // 2) + 1``): ``(B, max_kernel)``."""
    u = rnd.uniform(keys, Stream.SIT_BLUR, (2,))
    kernel = 2 * (_randint(u[:, 0], 3, max_kernel + 1) // 2) + 1
    sigma = u[:, 1] * max_sigma + 0.1
    offsets = torch.arange(max_kernel, device=keys.device) - max_kernel // 2
    taps = torch.exp(-(offsets[None].float() ** 2) / (2 * sigma[:, None] ** 2))
    taps = torch.where(offsets[None].abs() <= kernel[:, None] // 2, taps, torch.zeros_like(taps))
    return taps / taps.sum(1, keepdim=True)


def _reflect(t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Offsets ``t`` into a span of length ``n`` (>= 1) reflected at its ends without repeating the edge (torch's
    'reflect' padding, folded again for offsets beyond the span): index in [0, n)."""
    period = (2 * (n - 1)).clamp_min(1)
    m = t.abs() % period
    return torch.where(n == 1, torch.zeros_like(m), torch.where(m < n, m, period - m))


def _blur_axis(x: torch.Tensor, taps: torch.Tensor, start: torch.Tensor, end: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlates each image with its ``taps`` along ``dim`` (2: rows, 3: columns) inside [start, end), reflecting
    at that span's ends. Outside the span the values are meaningless (the caller masks them)."""
    b, c, h, w = x.shape
    side = x.shape[dim]
    pos = torch.arange(side, device=x.device)
    half = taps.shape[1] // 2
    out = torch.zeros_like(x)
    for j in range(taps.shape[1]):
        index = start[:, None] + _reflect(pos[None] - start[:, None] + (j - half), end[:, None] - start[:, None])
        index = index.clamp(0, side - 1)  # rows outside the span read something, and are masked later
        shape = (b, 1, side, 1) if dim == 2 else (b, 1, 1, side)
        out = out + taps[:, j].view(b, 1, 1, 1) * x.gather(dim, index.view(shape).expand(b, c, h, w))
    return out


def blur_rectangle(x: torch.Tensor, keys: torch.Tensor, tol: int, max_kernel: int, max_sigma: float) -> torch.Tensor:
    """Stage 2: one rectangle blurred by its own Gaussian, the rectangle filtered alone (reflected at its border,
    as the published code filters the cropped rectangle)."""
    size = x.shape[-1]
    r0, r1, c0, c1 = _blur_rectangle(keys, size, tol)
    taps = gaussian_taps(keys, max_kernel, max_sigma)
    blurred = _blur_axis(_blur_axis(x, taps, r0, r1, 2), taps, c0, c1, 3)
    return torch.where(box_mask(r0, r1, c0, c1, size), blurred, x)


def _blur_rectangle(keys: torch.Tensor, size: int, tol: int) -> tuple[torch.Tensor, ...]:
    """The blurred rectangle: numbers 2..5 of the blur's stream (0 and 1 are its kernel size and sigma)."""
    u = rnd.uniform(keys, Stream.SIT_BLUR, (6,))[:, 2:]
    r0, r1 = _spans(u[:, 0], u[:, 2], size, tol, size)
    c0, c1 = _spans(u[:, 1], u[:, 3], size, tol, size)
    return r0, r1, c0, c1


def block_mask(keys: torch.Tensor, stream: int, size: int, max_fraction: float, tol: int, largest: int) -> torch.Tensor:
    """The rectangles of ``drop_rand_patches``: drawn one after another (sides in [tol, largest), clipped at the
    border) until their areas add up to ``U(0, max_fraction) * size^2``. ``(B, 1, size, size)`` bool.

    Every rectangle covers at least ``tol^2`` pixels, so ``ceil(max_fraction * size^2 / tol^2)`` candidates are
    always enough; the candidates are drawn for every image (a fixed count keeps each image's numbers its own)
    and the first ones whose running area starts below the target are painted.
    """
    candidates = max(1, math.ceil(max_fraction * size * size / (tol * tol)))
    u = rnd.uniform(keys, stream, (1 + 4 * candidates,))
    target = u[:, 0] * max_fraction * size * size  # n_drop_pix
    u = u[:, 1:].view(-1, candidates, 4)  # rnd_r, rnd_c, rnd_h, rnd_w
    r0, r1 = _spans(u[..., 0], u[..., 2], size, tol, largest)
    c0, c1 = _spans(u[..., 1], u[..., 3], size, tol, largest)
    area = (r1 - r0) * (c1 - c0)
    active = (area.cumsum(1) - area) < target[:, None]  # (B, candidates): a prefix of each row
    mask = torch.zeros(keys.shape[0], size, size, dtype=torch.bool, device=keys.device)
    for m in range(int(active.sum(1).max())):
        rows, cols = _inside(r0[:, m], r1[:, m], size), _inside(c0[:, m], c1[:, m], size)
        mask |= active[:, m, None, None] & rows[:, :, None] & cols[:, None, :]
    return mask[:, None]


def donors(keys: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4's other image: among the images at the same position of their group of ``group`` (one view set, as
    the published code corrupts each view set apart), uniformly; ``(B,)`` donor index and whether it is another
    image (published: nothing is replaced when the draw picks the image itself)."""
    b = keys.shape[0]
    groups = b // group
    own = torch.arange(b, device=keys.device)
    chosen = _randint(rnd.uniform(keys, Stream.SIT_DONOR, ()), 0, groups)
    return chosen * group + own % group, chosen != own // group


def corrupt(clean: torch.Tensor, keys: torch.Tensor, settings, group: int) -> torch.Tensor:
    """The four published corruption stages of each image (see the module docstring).

    Args:
        clean: ``(B, 3, S, S)`` float32, normalised and rotated views (the reconstruction targets).
        keys: ``(B,)`` int64 from :func:`view_keys`.
        settings: a ``SiTConfig`` (``max_drop``, ``max_replace``, ``max_block``, ``min_block``, ``max_kernel``,
            ``max_sigma``).
        group: images ``group * g + j`` for fixed ``j`` form one view set (2 in training, 1 for single views);
            ``B`` must be a multiple of it.

    Returns:
        ``(B, 3, S, S)`` float32, the corrupted views; gradients reach ``clean`` through every kept pixel.
    """
    size = clean.shape[-1]
    tol, largest = int(settings.min_block * size), int(settings.max_block * size)
    x = grey_rectangle(clean, keys, tol)
    x = blur_rectangle(x, keys, tol, settings.max_kernel, settings.max_sigma)
    noise = rnd.normal(keys, Stream.SIT_NOISE, tuple(clean.shape[1:]))
    x = torch.where(block_mask(keys, Stream.SIT_DROP, size, settings.max_drop, tol, largest), noise, x)
    donor, other = donors(keys, group)
    replaced = block_mask(keys, Stream.SIT_REPLACE, size, settings.max_replace, tol, largest) & other.view(-1, 1, 1, 1)
    return torch.where(replaced, clean[donor], x)

"""Fragment weights and front-to-back compositing, and ``render_scene``: rasterise, weight, composite.

Gradients: the rasteriser only decides *which* points cover a pixel (radii go in detached). A fragment's weight
``w = 1 - d^2 / r^2`` is computed here from the point's own radius, so radii get exact gradients through the
weights, and colours through the compositor. ``w`` falls to zero at the disk's edge, so while a pixel holds fewer
than K fragments the image is continuous in the radius where the pixel enters or leaves a disk.

It is not continuous where the K nearest points bind: with all K slots of a pixel full, a nearer point whose disk
grows over the pixel enters with ``w ~ 0`` and evicts the farthest (K-th) fragment, whose whole contribution
vanishes at once (and returns when the disk shrinks back). The gradient is exact on either side of that radius;
it does not see the jump. Tested: ``tests/test_truth.py::test_image_jumps_in_the_radius_where_k_binds``.

Two implementations of the same images: :func:`fragment_weights` + :func:`composite` (PyTorch3D's compositors on
the dense ``(B, H, W, K)`` fragments, autograd through every step: the reference) and :func:`draw_fragments`
(one autograd function over the occupied slots only, a :class:`~dr_fdsl.render.structures.FragmentList`, with a
hand-written backward; what :func:`render_scene` uses). On CPU at 64 px, 2,000 points, K=8, 3% of the fragment
slots and 10% of the pixels hold a point, and the reference spends most of its time copying and masking the empty
ones. :func:`draw_fragments` composites slot by slot over the pixels that hold a fragment in that slot
(:class:`Layers`: the pixels ordered by their number of fragments, so each slot's pixels are a prefix and each
slot's work is arithmetic on slices), repeating PyTorch3D's float32 arithmetic in its order, so its images equal
the reference's bit for bit (tested); its gradients are the same derivatives, rounded differently (tested against
the reference and by ``gradcheck`` in float64).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from pytorch3d.renderer.compositing import alpha_composite, norm_weighted_sum

from dr_fdsl.render.rasterizers import RASTERIZERS, rasterize_list
from dr_fdsl.render.structures import FragmentList, Fragments, Scene


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
    ``norm_weighted``: ``(1 - T) sum_k w_k c_k / max(sum_k w_k, 1e-4) + T bg``. The floor is PyTorch3D's
    (``norm_weighted_sum`` divides by at least 1e-4): where ``sum_k w_k < 1e-4`` the colour term is scaled by
    ``sum_k w_k / 1e-4`` (a pixel barely touched is darker than the formula without the floor says, by up to
    2.5e-5 for colours in [0, 1]; e.g. one white fragment of weight 5e-5 on a black background gives 2.5e-5, not
    5e-5). Tested: ``tests/test_truth.py::test_norm_weighted_floors_the_weight_sum_at_1e_4``.

    Args:
        weights: ``(B, H, W, K)`` from :func:`fragment_weights`. colors: ``(B, N, 3)`` in [0, 1].
        background: ``(B, 3, H, W)`` or ``(B, 3, 1, 1)``.
    """
    idx = rearrange(fragments.idx, "b h w k -> b k h w")  # PyTorch3D's compositors take slots first
    alphas = rearrange(weights, "b h w k -> b k h w")
    features = rearrange(colors, "b n c -> c (b n)")  # channels by packed point index
    transmittance = torch.prod(1 - alphas, dim=1, keepdim=True)  # (B, 1, H, W)
    if compositor == "alpha":
        image = alpha_composite(idx, alphas, features)
    elif compositor == "norm_weighted":
        image = (1 - transmittance) * norm_weighted_sum(idx, alphas, features)
    else:
        raise ValueError(f"renderer.compositor must be 'alpha' or 'norm_weighted', got {compositor!r}")
    return (image + transmittance * background).clamp(0, 1)


_NORM_FLOOR = 1e-4  # PyTorch3D's norm_weighted_sum: the weight sum is at least this


class Layers(NamedTuple):
    """A :class:`FragmentList` laid out for compositing slot by slot (``M`` occupied pixels, ``F`` fragments).

    The occupied pixels are ordered by their number of fragments, most first, so the pixels that hold a
    fragment in slot ``k`` are the first ``counts[k]`` of them, and slot ``k``'s fragments are the contiguous
    block ``F[starts[k] : starts[k] + counts[k]]`` of the slot-major order: compositing slot ``k`` is arithmetic
    on slices, with no index and no empty slot.

    batch, row, col: ``(M,)`` int64, each occupied pixel. slot_major: ``(F,)`` int64, the list's fragment at each
    slot-major position. position: ``(F,)`` int64, its inverse (the slot-major position of each listed fragment).
    counts, starts: python ints, one per slot that holds a fragment.
    """

    batch: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    slot_major: torch.Tensor
    position: torch.Tensor
    counts: list[int]
    starts: list[int]


def layers(fragments: FragmentList) -> Layers:
    """The slot-major layout of ``fragments`` (see :class:`Layers`)."""
    b, h, w, _ = fragments.shape
    device = fragments.pixel.device
    first = torch.ones_like(fragments.pixel, dtype=torch.bool)
    first[1:] = fragments.pixel[1:] != fragments.pixel[:-1]
    pixel_of = first.cumsum(0) - 1  # each fragment's occupied pixel, in list order
    pixels = fragments.pixel[first]
    sizes = torch.bincount(pixel_of, minlength=pixels.numel())
    by_size = torch.sort(sizes, descending=True, stable=True).indices
    # each pixel's place in the size order (index_select and scatter_: the 1-D gathers and scatters that cost least)
    place = torch.empty_like(by_size).scatter_(0, by_size, torch.arange(by_size.numel(), device=device))
    per_slot = torch.bincount(fragments.rank)  # fragments in slot k = pixels with more than k fragments
    offsets = torch.cumsum(per_slot, 0) - per_slot
    position = offsets.index_select(0, fragments.rank) + place.index_select(0, pixel_of)
    slot_major = torch.empty_like(position).scatter_(0, position, torch.arange(position.numel(), device=device))
    pixels = pixels.index_select(0, by_size)
    counts, starts = per_slot.tolist(), offsets.tolist()
    return Layers(pixels // (h * w), pixels % (h * w) // w, pixels % w, slot_major, position, counts, starts)


class _Draw(torch.autograd.Function):
    """Weights and compositing of the listed fragments; see :func:`draw_fragments`. The forward repeats the
    reference's float32 operations in its order: ``w = clamp(1 - d / (r * r), 0, 1)``; PyTorch3D's per-pixel
    loops over the slots front to back (``alpha``: ``accum += (cum * w_k) * c_k; cum = cum * (1 - w_k)``;
    ``norm_weighted``: ``t = sum w_k`` floored at 1e-4, ``accum += (w_k * c_k) / t``); ``T = prod(1 - w)`` by
    ``torch.prod`` over the slots, as the reference takes it; then ``clamp(image + T * bg, 0, 1)``. An empty slot
    (weight 0) changes none of these values exactly, so only occupied slots are visited, slot by slot over the
    pixels that hold one (:class:`Layers`)."""

    @staticmethod
    def forward(ctx, colors, radii, background, fragments: FragmentList, lay: Layers, compositor: str):
        # colors (B*N, 3), radii (B*N,), background (B, 3, H|1, W|1)
        b, h, w, _ = fragments.shape
        point = fragments.idx.index_select(0, lay.slot_major)  # (F,) slot-major from here on
        d = fragments.dists.index_select(0, lay.slot_major)
        r = radii.index_select(0, point)
        raw = 1 - d / (r * r)
        weights = raw.clamp(0, 1)
        cols = colors.index_select(0, point)  # (F, 3)
        bg_full = background.expand(b, 3, h, w)
        bg = bg_full[lay.batch, :, lay.row, lay.col]  # (M, 3)
        keep = 1 - weights
        accum = torch.zeros_like(bg)
        cum = torch.ones_like(bg[:, 0])  # transmittance in front of the next slot
        front = torch.empty_like(weights)  # (F,): transmittance in front of each fragment
        total = torch.zeros_like(cum) if compositor == "norm_weighted" else None
        keeps = torch.ones(cum.shape[0], fragments.shape[3], dtype=keep.dtype, device=keep.device)  # (M, K)
        for slot, (m, start) in enumerate(zip(lay.counts, lay.starts)):
            k = slice(start, start + m)
            front[k] = cum[:m]
            if compositor == "alpha":
                accum[:m] = accum[:m] + (cum[:m] * weights[k])[:, None] * cols[k]
            else:
                total[:m] = total[:m] + weights[k]
            cum[:m] = cum[:m] * keep[k]
            keeps[:m, slot] = keep[k]
        # T = prod(1 - w) as the reference takes it: torch.prod over the K slots of each pixel, empty ones 1. A running
        # product (cum) is the same value only while the reduction is sequential (on AVX2 CPUs it splits into vector
        # accumulators from K = 32 on, measured: 1 ulp apart)
        transmittance = torch.prod(keeps, dim=1)
        if compositor == "norm_weighted":
            total = torch.where(total < _NORM_FLOOR, torch.full_like(total, _NORM_FLOOR), total)
            for m, start in zip(lay.counts, lay.starts):
                k = slice(start, start + m)
                accum[:m] = accum[:m] + (weights[k, None] * cols[k]) / total[:m, None]
            normed = accum  # (M, 3): the normalised weighted sum
            accum = (1 - transmittance)[:, None] * accum
        else:
            normed = None
        value = accum + transmittance[:, None] * bg
        image = (bg_full + 0.0).clamp_(0, 1)  # empty pixels: clamp(0 + 1 * bg) (+ 0.0 turns -0.0 into 0.0)
        image[lay.batch, :, lay.row, lay.col] = value.clamp(0, 1)
        ctx.compositor, ctx.shape, ctx.lay = compositor, (b, h, w), lay
        ctx.num_points, ctx.background_shape = colors.shape[0], background.shape
        ctx.save_for_backward(weights, cols, bg, front, transmittance, value, r, raw, d, fragments.idx, normed,
                              total, background, keeps)
        return image

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_image):
        weights, cols, bg, front, transmittance, value, r, raw, d, fragment, normed, total, background, keeps = \
            ctx.saved_tensors
        lay, (b, h, w) = ctx.lay, ctx.shape
        inside = (value >= 0) & (value <= 1)  # clamp's gradient, as torch passes it (bounds included)
        g = grad_image[lay.batch, :, lay.row, lay.col] * inside  # (M, 3)
        grad_w, grad_c = torch.empty_like(weights), torch.empty_like(cols)
        slots = list(zip(lay.counts, lay.starts))
        if ctx.compositor == "alpha":
            # d image / d w_k = front_k (c_k - behind_k), behind_k the colour seen through slot k (background last)
            behind = bg.clone()
            for m, start in reversed(slots):
                k = slice(start, start + m)
                grad_w[k] = (g[:m] * (cols[k] - behind[:m])).sum(1) * front[k]
                grad_c[k] = g[:m] * (front[k] * weights[k])[:, None]
                behind[:m] = weights[k, None] * cols[k] + (1 - weights[k, None]) * behind[:m]
        else:
            # d T / d w_k = -prod_{j != k} (1 - w_j): the products in front and behind, no division by 1 - w_k;
            # torch.cumprod over the (M, K) slots (on CPU it accumulates in float64: rounded as before)
            ahead = torch.cumprod(torch.cat([torch.ones_like(keeps[:, :1]), keeps[:, :-1]], dim=1), dim=1)
            after = torch.cumprod(torch.cat([torch.ones_like(keeps[:, :1]), keeps.flip(1)[:, :-1]], dim=1), dim=1)
            others_all = ahead * after.flip(1)  # (M, K)
            floored = total <= _NORM_FLOOR  # there t is the constant 1e-4: the true derivative (PyTorch3D's
            bright = (1 - transmittance) / total  # backward differentiates t there as if it were the sum)
            for slot, (m, start) in reversed(list(enumerate(slots))):
                k = slice(start, start + m)
                others = others_all[:m, slot]
                grad_c[k] = g[:m] * (weights[k] * bright[:m])[:, None]
                spread = torch.where(floored[:m, None], cols[k], cols[k] - normed[:m])
                grad_w[k] = (g[:m] * (others[:, None] * (normed[:m] - bg[:m]) + bright[:m, None] * spread)).sum(-1)
        grad_colors = grad_radii = grad_background = None
        # per point, the fragments' gradients are summed in list order (the order autograd's reference sums them)
        if ctx.needs_input_grad[0]:
            grad_colors = torch.zeros(ctx.num_points, 3, dtype=cols.dtype, device=cols.device)
            grad_colors.index_add_(0, fragment, grad_c.index_select(0, lay.position))
        if ctx.needs_input_grad[1]:
            # w = clamp(1 - d / r^2, 0, 1): dw/dr = 2 d / r^3 where the clamp passes it
            passes = (raw >= 0) & (raw <= 1)
            grad_r = torch.where(passes, grad_w * 2 * (d / (r * r)) / r, torch.zeros_like(grad_w))
            grad_radii = torch.zeros(ctx.num_points, dtype=r.dtype, device=r.device)
            grad_radii.index_add_(0, fragment, grad_r.index_select(0, lay.position))
        if ctx.needs_input_grad[2]:
            full = grad_image.clone()  # empty pixels: d clamp(bg) / d bg
            full = full * ((background.expand(b, 3, h, w) >= 0) & (background.expand(b, 3, h, w) <= 1))
            full[lay.batch, :, lay.row, lay.col] = g * transmittance[:, None]
            grad_background = full.sum_to_size(ctx.background_shape)
        return grad_colors, grad_radii, grad_background, None, None, None


def draw_fragments(fragments: Fragments | FragmentList, radii: torch.Tensor, colors: torch.Tensor,
                   background: torch.Tensor, compositor: str = "alpha") -> torch.Tensor:
    """``composite(fragments, fragment_weights(fragments, radii), colors, background, compositor)``, the same
    images bit for bit, computed on the occupied slots only with a hand-written backward: ``(B, 3, H, W)``
    float32 in [0, 1]. Gradients go to ``colors``, ``radii`` and ``background`` (whichever require grad).

    Args:
        fragments: dense, or their occupied slots (:class:`FragmentList`, what ``rasterize_list`` gives).
        radii: ``(B, N)`` (with grad), in packed order ``b * N + n``. colors: ``(B, N, 3)`` in [0, 1].
        background: ``(B, 3, H, W)`` or ``(B, 3, 1, 1)``.
    """
    if compositor not in ("alpha", "norm_weighted"):
        raise ValueError(f"renderer.compositor must be 'alpha' or 'norm_weighted', got {compositor!r}")
    if isinstance(fragments, Fragments):
        fragments = FragmentList.of(fragments)
    return _Draw.apply(colors.reshape(-1, 3), radii.reshape(-1), background, fragments, layers(fragments),
                       compositor)


def render_scene(scene: Scene, image_size: int, points_per_pixel: int, compositor: str = "alpha",
                 backend: str = "pytorch3d") -> torch.Tensor:
    """Rasterise (``backend``, a name in :data:`dr_fdsl.render.rasterizers.RASTERIZERS`), weight and composite a
    :class:`Scene`: ``(B, 3, H, W)`` float32 in [0, 1]."""
    if scene.points.requires_grad:  # a learnt shape (renderer.perturbation): the reference, autograd to positions
        fragments = RASTERIZERS.get(backend)(scene.points, scene.radii, image_size, points_per_pixel)
        fragments = fragments._replace(dists=position_dists(fragments, scene.points, image_size))
        return composite(fragments, fragment_weights(fragments, scene.radii), scene.colors, scene.background,
                         compositor)
    fragments = rasterize_list(backend, scene.points, scene.radii, image_size, points_per_pixel)
    return draw_fragments(fragments, scene.radii, scene.colors, scene.background, compositor)


def position_dists(fragments: Fragments, points: torch.Tensor, image_size: int) -> torch.Tensor:
    """``fragments.dists`` ``(B, H, W, K)`` with a gradient to ``points (B, N, 3)`` NDC: the rasteriser's values
    exactly, and the derivative of ``(x_pixel - x)^2 + (y_pixel - y)^2`` (pixel centres as
    :func:`dr_fdsl.render.raster_sort.pixel_centre`, PyTorch3D's +x left, +y up). Only occupied slots are gathered
    (see :func:`fragment_weights`). Where a point crosses a pixel's disk edge its weight is 0, so the images are
    continuous in the positions until the K nearest bind (as in the radius)."""
    b, h, w, k = fragments.idx.shape
    valid = fragments.idx >= 0
    xy = points[..., :2].reshape(-1, 2)[fragments.idx[valid]]  # (F, 2)
    _, row, col, _ = valid.nonzero(as_tuple=True)
    centre = torch.stack([1 - (2 * col + 1) / w, 1 - (2 * row + 1) / h], dim=1).to(xy.dtype)
    d = ((centre - xy) ** 2).sum(1)
    dists = fragments.dists.clone()
    dists[valid] = dists[valid] + (d - d.detach())
    return dists

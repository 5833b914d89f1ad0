"""Multi-instance images (Anderson & Farrell's ``MultiGenerator``): several categories' objects in one image.

Every choice is drawn from the image's key, so the objects of an image, and hence its multi-hot target
(:func:`targets`), are a pure function of ``(class id, view seed)``: the objective derives its targets from the
same call as the renderer, and a static export needs nothing beyond the usual ``(category, view seed)`` pairs.

An image holds ``n`` objects, ``n`` uniform over ``1..max`` (published ``nobj_p=None``: uniform over 1..5). Object 0
is the image's own category drawn from its own view seed, so with ``max=1``, ``scale=[1, 1]`` and ``offset=0`` an
image is exactly the single-instance one. Objects 1.. are distinct other categories (the published generator
draws them from a cache of recent renders, so a category can appear twice and the image's own need not appear),
each with a view seed of its own, of the same sign as the image's (held-out views stay held out). Each object is
drawn by :meth:`PointRenderer.scene` as a whole image would be (its camera, augmentations, learnable colours and
radii), then scaled by ``f ~ U(scale)`` (published ``size_range`` [0.15, 0.6] of the image side; its point radii
too, as the published resize shrinks its points) and moved to a centre ``U(-offset, offset)`` per axis in NDC (the
published top-left corner is uniform over ``[-s // 2, size - s // 2)``: the centre anywhere in the image). Later
objects are drawn in front (the published composite pastes them over the earlier ones). Absent objects' points
are moved off screen. The background is object 0's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.settings import ObjectsConfig
from dr_fdsl.render.streams import Stream
from dr_fdsl.render.structures import OFFSCREEN, Scene

# Depth added per object below the last one: larger than any cloud's depth extent (a cloud in [-1, 1]^3 spans at
# most 2 sqrt(3) < 4), so object k is in front of every earlier object whatever its own depths.
DEPTH_STEP = 4.0
_SEED_MASK = 2**62 - 1  # training view seeds are in [0, 2^62)


class Objects(NamedTuple):
    """The objects of ``B`` images, ``K = max`` slots each (absent slots hold valid but unused values).

    ids: ``(B, K)`` int64 categories, distinct within an image, ``ids[:, 0]`` the image's own.
    present: ``(B, K)`` bool, ``present[:, :n]`` True for the image's ``n`` objects.
    seeds: ``(B, K)`` int64 view seeds, ``seeds[:, 0]`` the image's own, the others of the same sign.
    scale: ``(B, K)`` float32 in ``[scale[0], scale[1]]``; offset: ``(B, K, 2)`` float32 NDC x, y of the centre.
    """

    ids: torch.Tensor
    present: torch.Tensor
    seeds: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor


def draw_objects(class_ids: torch.Tensor, view_seeds: torch.Tensor, num_classes: int, cfg: ObjectsConfig) -> Objects:
    """The objects of each image, from its key: ``class_ids``, ``view_seeds`` ``(B,)`` int64 -> :class:`Objects`."""
    k, device = cfg.max, class_ids.device
    class_ids, view_seeds = class_ids.long(), view_seeds.long().to(device)
    keys = rnd.image_keys(class_ids, view_seeds)
    count = 1 + (rnd.uniform(keys, Stream.OBJECT_COUNT, ()) * k).long().clamp_max(k - 1)  # uniform over 1..k
    present = torch.arange(k, device=device)[None] < count[:, None]
    # distinct offsets in [1, C): the K - 1 smallest of C - 1 keyed uniforms (a keyed random permutation's head)
    if k > 1:
        order = torch.sort(rnd.uniform(keys, Stream.OBJECT_CLASSES, (num_classes - 1,)), dim=1, stable=True).indices
        others = (class_ids[:, None] + 1 + order[:, :k - 1]) % num_classes
        ids = torch.cat([class_ids[:, None], others], dim=1)
    else:
        ids = class_ids[:, None]
    # 72 keyed bits -> a 62-bit seed per further object, negative (-s - 1) for held-out images
    bits = (rnd.uniform(keys, Stream.OBJECT_SEED, (k, 3)) * 2.0**24).long()
    fresh = ((bits[..., 0] << 38) | (bits[..., 1] << 14) | (bits[..., 2] >> 10)) & _SEED_MASK
    fresh = torch.where(view_seeds[:, None] < 0, -fresh - 1, fresh)
    seeds = torch.cat([view_seeds[:, None], fresh[:, 1:]], dim=1)
    scale = rnd.uniform_range(keys, Stream.OBJECT_SCALE, cfg.scale, (k,))
    offset = rnd.uniform_range(keys, Stream.OBJECT_OFFSET, (-cfg.offset, cfg.offset), (k, 2))
    return Objects(ids, present, seeds, scale, offset)


def targets(class_ids: torch.Tensor, view_seeds: torch.Tensor, num_classes: int, cfg: ObjectsConfig) -> torch.Tensor:
    """Multi-hot targets ``(B, C)`` float32: 1 for every category present in the image (objects off: its own)."""
    hot = torch.zeros(len(class_ids), num_classes, device=class_ids.device)
    if cfg.max == 0:
        return hot.scatter_(1, class_ids.long()[:, None], 1.0)
    obj = draw_objects(class_ids, view_seeds, num_classes, cfg)
    return hot.scatter_(1, obj.ids, obj.present.float())  # ids are distinct: no slot overwrites another


def compose(scene_fn, class_ids: torch.Tensor, view_seeds: torch.Tensor, num_classes: int,
            cfg: ObjectsConfig) -> tuple[Scene, torch.Tensor]:
    """One scene of ``K * N`` points per image from the ``B * K`` object scenes.

    Args:
        scene_fn: ``PointRenderer.scene``: ``(ids (M,), seeds (M,)) -> (Scene with (M, N, ...), rows)``.
        class_ids, view_seeds: ``(B,)`` int64.
    Returns:
        the scene (points ``(B, K * N, 3)``, object ``k``'s points at ``[k * N, (k + 1) * N)``) and the table rows
        every object read.
    """
    b, k = len(class_ids), cfg.max
    obj = draw_objects(class_ids, view_seeds, num_classes, cfg)
    scene, rows = scene_fn(obj.ids.reshape(-1), obj.seeds.reshape(-1))
    n = scene.points.shape[1]
    points = scene.points.view(b, k, n, 3)
    scale, offset = obj.scale[..., None, None], obj.offset[:, :, None]  # (B, K, 1, 1), (B, K, 1, 2)
    xy = points[..., :2] * scale + offset
    depth = points[..., 2:] + (k - 1 - torch.arange(k, device=points.device)).view(1, k, 1, 1) * DEPTH_STEP
    hidden = (points[..., 0] == OFFSCREEN) | ~obj.present[..., None]  # (B, K, N)
    moved = torch.cat([xy, depth], dim=-1)
    offscreen = torch.tensor([OFFSCREEN, OFFSCREEN, 1.0], device=points.device)
    moved = torch.where(hidden[..., None], offscreen, moved)
    radii = scene.radii.view(b, k, n) * obj.scale[..., None]
    background = scene.background.view(b, k, *scene.background.shape[1:])[:, 0]
    return Scene(moved.view(b, k * n, 3), scene.colors.reshape(b, k * n, 3), radii.view(b, k * n), background), rows

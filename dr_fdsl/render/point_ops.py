"""The point operations of a scene: one signature, one registration each, run in one documented order.

:meth:`~dr_fdsl.render.renderer.PointRenderer.scene` gathers each image's bank points with their colours and radii
(a :class:`Points`), runs the registered operations over them in the order of
:func:`~dr_fdsl.render.point_ops_settings.pipeline` with :func:`run_point_ops`, and hands the result to the
rasteriser. Every operation is a function ``(points: Points, ctx: SceneContext) -> Points`` registered in
:data:`~dr_fdsl.render.point_ops_settings.POINT_OPS` by its path, with the config keys it reads, the random
streams it draws and its place in the order (:class:`~dr_fdsl.render.point_ops_settings.PointOp`; the
registrations are torch-free, so that the config loader reads them without importing this module). Each draws from
its image's key only (never from the batch), so an image depends only on (category, view seed) and a static export
equals the in-loop render. Each is the identity (returns its input) at its keys' defaults, except ``view`` and
``project``, which are the camera. The built-in operations' keys are flat fields of ``renderer.augment`` (and
``renderer.view``), checked in ``render.settings.validate_renderer``; :attr:`PointOp.keys` says which keys each
operation owns.

The order is the contest's (sub-sampling first, so that what follows sees only the kept points; its mask does not
depend on positions), then the camera:

==============  =====================================================  ==========================================
operation       keys (``renderer.augment.*`` unless named)             what it does
==============  =====================================================  ==========================================
subsample       subsample, subsample_exact, subsample_prob             masks points (``keep``)
instances       bank.<family>.instances, map_jitter                    the family's per-image points and shades
corrupt         drop_local, add_global, add_local                      ModelNet-C: masks and appends points
pointwolf       pointwolf, pointwolf_*                                 local deformation (ours or published)
scale           scale, scale_shift_prob                                isotropic scale
shift           shift, shift_frame=object, scale_shift_prob            object-space shift
jitter          jitter, jitter_prob                                    Gaussian noise per point
view            renderer.view.* (rotation, distance, fov, ...)         draws each image's camera
camera_shift    shift, shift_frame=camera, scale_shift_prob            camera-space shift (before the rotation)
project         renderer.view.projection, pytorch3d_arithmetic         NDC and visibility (``keep``)
window          window_shift, window_scale, dihedral                   Anderson & Farrell's window and flips
depth_hue       depth_hue, depth_hue_saturation, depth_hue_value       colours times the depth hue
random_colors   random_colors                                          colours times random ones, per image/point
point_size      radius_scale                                           radii times a factor per image
==============  =====================================================  ==========================================

``shift`` and ``camera_shift`` are one draw (streams ``SHIFT`` and the scale's coin ``SCALE_SHIFT_GATE``, one coin
for scale and shift as the contest's ``random_shift_scale_point_cloud``) made at one of two places, whichever
``shift_frame`` names; every other stream belongs to one operation (tests/test_point_ops.py checks it).
To add an operation: its function ``(points, ctx) -> points`` in a module of its own (with torch), its settings
dataclass (identity defaults) and ``validate(r)`` in a torch-free module, and one registration line,
``point_op(name, "package.module:function", settings=..., validate=..., streams=(new numbers), after="jitter")``
(:func:`~dr_fdsl.render.point_ops_settings.point_op`; run before the config is first imported, as a family's
registration). Its keys become the section ``renderer.augment.<name>``, checked at load; nothing here, in
``AugmentConfig``, ``validate_renderer`` or ``Stream`` changes (``tests/test_plugins.py`` adds one from a package
outside dr_fdsl). The built-in operations below keep their flat keys (renaming them would break every user config
and content key) and their registrations in ``point_ops_settings``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dr_fdsl.render import augment, corrupt, pointwolf
from dr_fdsl.render import keyed_random as rnd
from dr_fdsl.render.point_ops_settings import POINT_OPS, PointOp, pipeline, point_op  # noqa: F401  (re-exported)
from dr_fdsl.render.settings import RendererConfig
from dr_fdsl.render.streams import Stream
from dr_fdsl.render.views import Views, project, sample_views
from dr_fdsl.render.window import window_and_flips


class Points(NamedTuple):
    """One batch of clouds between point operations (``P``: the bank's ``N`` points plus any added by ``corrupt``).

    xyz: ``(B, P, 3)`` float32 cloud coordinates (object space; after ``camera_shift``, shifted along ``R^T s``).
    colors: ``(B, P, 3)`` float32 in [0, 1], differentiable in the colour tables.
    radii: ``(B, P)`` float32 NDC units, differentiable in the radius tables.
    keep: ``(B, P)`` bool, the points drawn (False: masked by sub-sampling, corruption, instance or visibility).
    views: the cameras (:class:`~dr_fdsl.render.views.Views`), None before ``view``.
    ndc: ``(B, P, 3)`` float32 NDC x, y and depth (:mod:`dr_fdsl.render.views`), None before ``project``.
    """

    xyz: torch.Tensor
    colors: torch.Tensor
    radii: torch.Tensor
    keep: torch.Tensor
    views: Views | None = None
    ndc: torch.Tensor | None = None


class SceneContext(NamedTuple):
    """What the point operations read besides the points; fixed for one scene.

    cfg: the renderer settings. class_ids: ``(B,)`` int64 categories. keys: ``(B,)`` int64 image keys
    (:func:`dr_fdsl.render.keyed_random.image_keys` of category and view seed), the only source of randomness.
    mixed: ``(B, N)`` bool, the points taken from a mixed-in category (``renderer.augment.mix``).
    instances: the family's per-image drawer (:func:`dr_fdsl.render.instances.build_instances`: the builder its
    ``Family.drawer`` names), or None.
    """

    cfg: RendererConfig
    class_ids: torch.Tensor
    keys: torch.Tensor
    mixed: torch.Tensor
    instances: nn.Module | None


def run_point_ops(points: Points, ctx: SceneContext) -> Points:
    """Every registered operation, in the order of :func:`~dr_fdsl.render.point_ops_settings.pipeline`."""
    for name in pipeline():
        points = POINT_OPS[name].apply(points, ctx)
    return points


def subsample(points: Points, ctx: SceneContext) -> Points:
    """Random sub-sampling (:func:`~dr_fdsl.render.augment.subsample_mask`): a mask, positions untouched."""
    return points._replace(keep=points.keep & augment.subsample_mask(ctx.keys, points.keep.shape[1], ctx.cfg.augment))


def instances(points: Points, ctx: SceneContext) -> Points:
    """The family's per-image points (its instance, or svd2d's jittered system) and colour shades.

    Points taken from a mixed-in category keep their bank position (the drawer replays the image's own category;
    instances refuse mixing, so there every point is the image's category's)."""
    if ctx.instances is None:
        return points
    drawn = ctx.instances(ctx.class_ids, ctx.keys, points.xyz)
    xyz = torch.where(ctx.mixed[..., None], points.xyz, drawn.points)
    colors = points.colors if drawn.shade is None else points.colors * drawn.shade[..., None]
    keep = points.keep if drawn.keep is None else points.keep & drawn.keep
    return points._replace(xyz=xyz, colors=colors, keep=keep)


def corruptions(points: Points, ctx: SceneContext) -> Points:
    """ModelNet-C's drop-local (a mask), add-global and add-local (points appended after the others, each with the
    colour and radius of its source point, gradients included): see :mod:`dr_fdsl.render.corrupt`."""
    aug, keys = ctx.cfg.augment, ctx.keys
    keep = corrupt.drop_local(points.xyz, points.keep, keys, aug.drop_local)
    added = []
    if aug.add_global > 0:
        added.append(corrupt.add_global(keys, keep, aug.add_global))
    if aug.add_local > 0:
        added.append(corrupt.add_local(points.xyz, keep, keys, aug.add_local))
    if not added:
        return points._replace(keep=keep)
    xyz, source = (torch.cat(parts, 1) for parts in zip(*added))
    rows = torch.arange(len(keys), device=keys.device)[:, None]
    return points._replace(xyz=torch.cat([points.xyz, xyz], 1),
                           colors=torch.cat([points.colors, points.colors[rows, source]], 1),
                           radii=torch.cat([points.radii, points.radii[rows, source]], 1),
                           keep=torch.cat([keep, torch.ones_like(source, dtype=torch.bool)], 1))


def point_wolf(points: Points, ctx: SceneContext) -> Points:
    """PointWOLF: the published one over the kept points (:mod:`dr_fdsl.render.pointwolf`), or ours
    (:func:`dr_fdsl.render.augment.pointwolf`)."""
    aug = ctx.cfg.augment
    if not aug.pointwolf:
        return points
    if aug.pointwolf_kind == "published":
        return points._replace(xyz=pointwolf.pointwolf(points.xyz, points.keep, ctx.keys, aug))
    return points._replace(xyz=augment.pointwolf(points.xyz, ctx.keys, aug))


def scale(points: Points, ctx: SceneContext) -> Points:
    """Isotropic scale per image in ``scale`` (:func:`~dr_fdsl.render.augment.random_scale`)."""
    aug = ctx.cfg.augment
    if aug.scale == (1.0, 1.0):
        return points
    return points._replace(xyz=points.xyz * augment.random_scale(ctx.keys, aug)[:, None, None])


def object_shift(points: Points, ctx: SceneContext) -> Points:
    """With ``shift_frame: object``: ``p * s + t`` (the contest's ``random_shift_scale_point_cloud``)."""
    aug = ctx.cfg.augment
    if aug.shift_frame != "object" or aug.shift <= 0:
        return points
    return points._replace(xyz=points.xyz + augment.random_shift(ctx.keys, aug)[:, None])


def jitter(points: Points, ctx: SceneContext) -> Points:
    """Gaussian jitter of std ``jitter`` per coordinate, on an image when its coin (``jitter_prob``) says so."""
    aug = ctx.cfg.augment
    if aug.jitter <= 0:
        return points
    noise = aug.jitter * rnd.normal(ctx.keys, Stream.JITTER, tuple(points.xyz.shape[1:]))
    on = augment.coin(ctx.keys, Stream.JITTER_GATE, aug.jitter_prob)
    return points._replace(xyz=points.xyz + (noise if on is None else noise * on[:, None, None]))


def view(points: Points, ctx: SceneContext) -> Points:
    """Draws each image's camera (:func:`~dr_fdsl.render.views.sample_views`; rotation streams 1 to 3)."""
    return points._replace(views=sample_views(ctx.keys, ctx.cfg.view))


def camera_shift(points: Points, ctx: SceneContext) -> Points:
    """With ``shift_frame: camera``: a camera-space shift ``s``, which is a shift of the cloud along ``R^T s``
    before the rotation."""
    aug = ctx.cfg.augment
    if aug.shift_frame != "camera" or aug.shift <= 0:
        return points
    shift = augment.random_shift(ctx.keys, aug)
    return points._replace(xyz=points.xyz + shift[:, None] @ points.views.rotation)


def projection(points: Points, ctx: SceneContext) -> Points:
    """NDC through the cameras (:func:`~dr_fdsl.render.views.project`); points behind a camera leave ``keep``."""
    view_cfg = ctx.cfg.view
    ndc, visible = project(points.xyz, points.views, view_cfg.projection, view_cfg.pytorch3d_arithmetic)
    return points._replace(ndc=ndc, keep=visible & points.keep)


def window(points: Points, ctx: SceneContext) -> Points:
    """Anderson & Farrell's window and flips on the projected points (:mod:`dr_fdsl.render.window`)."""
    return points._replace(ndc=window_and_flips(points.ndc, ctx.keys, ctx.cfg.augment))


def depth_hue(points: Points, ctx: SceneContext) -> Points:
    """Colours times the contest's depth hue (:func:`~dr_fdsl.render.augment.depth_hue_colors`) over the drawn
    points: white tables give the published colours."""
    aug = ctx.cfg.augment
    if not aug.depth_hue:
        return points
    toward_camera = -(points.xyz @ points.views.rotation.transpose(1, 2))[..., 2]
    return points._replace(colors=points.colors * augment.depth_hue_colors(toward_camera, points.keep, ctx.keys, aug))


def random_colors(points: Points, ctx: SceneContext) -> Points:
    """Colours times uniform random RGB in [0, 1): one per image (``image``) or per point (``point``, by the point's
    index, so a point keeps its colour whatever else sub-sampling drops). White tables give the random colours."""
    kind = ctx.cfg.augment.random_colors
    if kind == "none":
        return points
    shape = (1, 3) if kind == "image" else (points.colors.shape[1], 3)
    return points._replace(colors=points.colors * rnd.uniform(ctx.keys, Stream.RANDOM_COLORS, shape))


def point_size(points: Points, ctx: SceneContext) -> Points:
    """Radii times a factor per image, uniform in ``radius_scale``."""
    aug = ctx.cfg.augment
    if aug.radius_scale == (1.0, 1.0):
        return points
    factor = rnd.uniform_range(ctx.keys, Stream.RADIUS_SCALE, aug.radius_scale)
    return points._replace(radii=points.radii * factor[:, None])


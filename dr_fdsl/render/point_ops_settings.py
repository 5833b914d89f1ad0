"""The point operations' registrations, torch-free: what the config loader reads of each (its keys, its own
section, its checks, its random streams, its place in the pipeline) and where its code is.

Each operation is registered with :func:`point_op`: its name, its ``apply`` function ``(points, ctx) -> points``
by ``"module:attribute"`` path (imported on first use, so that loading a config imports no torch), the config keys
it reads, the random streams it draws, and where it runs (``after``: the operation it follows; none: the end of
the pipeline, which is how the built-in ones below give the documented order). An operation may own a settings
dataclass: it becomes the section ``renderer.augment.<name>`` (composed into ``AugmentConfig`` by
:mod:`dr_fdsl.render.settings`, as ``BankConfig`` composes ``bank.<family>``), checked at load by its ``validate``
(called with the ``RendererConfig``). A part outside ``dr_fdsl`` registers before the config is first imported,
as a family does (``tests/test_plugins.py``).

The built-in operations keep their flat keys in ``renderer.augment`` (``renderer.augment.jitter``, not
``renderer.augment.jitter.std``): renaming them would break every user config and change every content key. Their
checks are their ``validate`` functions below (``validate_renderer`` runs every operation's, in pipeline order; the
rules against the bank stay in ``validate_against_bank``); their code is :mod:`dr_fdsl.render.point_ops`.

Streams: a built-in operation draws on :class:`~dr_fdsl.render.streams.Stream` members; a new operation's streams
are plain numbers, refused at registration when ``Stream`` or another operation already has them (two uses of one
stream would draw the same numbers).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from dr_fdsl.registry import Registry, resolve
from dr_fdsl.render.streams import Stream
from dr_fdsl.settings import finite, need

if TYPE_CHECKING:
    from dr_fdsl.render.settings import RendererConfig


@dataclass(frozen=True)
class PointOp:
    """A registered point operation (see the module docstring).

    name: its name, and the key of its own section ``renderer.augment.<name>`` when it has ``settings``.
    path: ``"module:attribute"`` of its ``apply(points: Points, ctx: SceneContext) -> Points``.
    keys: the config keys it reads (bare names are ``renderer.augment.*``).
    streams: the random streams it draws (``Stream`` members, or new numbers for an operation added later).
    settings: its section's dataclass, or None. validate: its checks, ``validate(r: RendererConfig)``, or None.
    after: the operation it runs after (None: appended to the pipeline at registration).
    """

    name: str
    path: str
    keys: tuple[str, ...]
    streams: tuple[int, ...] = ()
    settings: type | None = None
    validate: Callable[[RendererConfig], None] | None = None
    after: str | None = None

    @cached_property
    def apply(self) -> Callable:
        """The operation's function, imported on first use."""
        return resolve(self.path)


POINT_OPS: Registry[PointOp] = Registry("point operation", "renderer.augment")
_ORDER: list[str] = []


def pipeline() -> tuple[str, ...]:
    """The registered operations in the order they run (docs/architecture.md and docs/rendering.md list it)."""
    return tuple(_ORDER)


def point_op(name: str, path: str, *, keys: tuple[str, ...] = (), streams: tuple[int, ...] = (),
             settings: type | None = None, validate: Callable | None = None, after: str | None = None) -> PointOp:
    """Registers operation ``name`` (see :class:`PointOp`) and returns it. ``keys`` defaults to the fields of
    ``settings`` (``<name>.<field>``). Programming errors, raised at registration: a name taken, ``after`` naming
    no registered operation, a stream number already drawn by ``Stream`` or another operation, ``settings`` that
    is not a dataclass, or given once ``AugmentConfig`` is composed (the renderer's settings imported)."""
    if settings is not None and not dataclasses.is_dataclass(settings):
        raise TypeError(f"point operation {name!r}: settings must be a dataclass, got {settings!r}")
    if settings is not None and "dr_fdsl.render.settings" in sys.modules:  # AugmentConfig is composed already
        raise ValueError(f"point operation {name!r} has its own settings: register it before dr_fdsl.config (or "
                         "dr_fdsl.render.settings) is first imported, or AugmentConfig has no section for it")
    if after is not None and after not in POINT_OPS:
        raise ValueError(f"point operation {name!r} runs after {after!r}, which is not registered; registered: "
                         f"{', '.join(_ORDER)}")
    taken = {int(s): f"Stream.{s.name}" for s in Stream}
    for op in POINT_OPS.values():
        taken.update({int(s): f"point operation {op.name!r}" for s in op.streams if not isinstance(s, Stream)})
    for stream in streams:
        if not isinstance(stream, Stream) and int(stream) in taken:
            raise ValueError(f"point operation {name!r}: stream {stream} is already drawn by {taken[int(stream)]}; "
                             f"take a free number (Stream's highest is {max(Stream)})")
    if not keys and settings is not None:
        keys = tuple(f"{name}.{f.name}" for f in dataclasses.fields(settings))
    op = PointOp(name, path, tuple(keys), tuple(streams), settings, validate, after)
    POINT_OPS.register(name, op)
    if after is None:
        _ORDER.append(name)
    else:  # after `after` and after the operations already placed after it, in registration order
        at = _ORDER.index(after) + 1
        while at < len(_ORDER) and POINT_OPS[_ORDER[at]].after is not None and _placed_after(_ORDER[at], after):
            at += 1
        _ORDER.insert(at, name)
    return op


def _placed_after(name: str, anchor: str) -> bool:
    """Whether ``name`` was placed (directly or through a chain of ``after``) after ``anchor``."""
    while name is not None and name != anchor:
        name = POINT_OPS[name].after
    return name == anchor



def _probability(r: RendererConfig, key: str) -> None:
    value = getattr(r.augment, key)
    need(0 <= value <= 1, f"renderer.augment.{key}", f"is a probability: must be in [0, 1], got {value}")


def _subsample(r: RendererConfig) -> None:
    aug = r.augment
    need(0 < aug.subsample[0] <= aug.subsample[1] <= 1, "renderer.augment.subsample",
         f"need 0 < low <= high <= 1 (fractions of points kept), got {aug.subsample}")
    _probability(r, "subsample_prob")


def _instances(r: RendererConfig) -> None:  # the family's own rules: Family.renderer_rules, validate_against_bank
    jitter = r.augment.map_jitter
    need(finite(jitter[1]) and 0 < jitter[0] <= jitter[1], "renderer.augment.map_jitter",
         f"need 0 < low <= high (published [0.8, 1.1]; [1, 1]: off), got {list(jitter)}")


def _corrupt(r: RendererConfig) -> None:  # drop_local against bank.num_points: validate_against_bank
    for key in ("drop_local", "add_global", "add_local"):
        need(getattr(r.augment, key) >= 0, f"renderer.augment.{key}", f"is a number of points: must be >= 0, got "
             f"{getattr(r.augment, key)}")


def _pointwolf(r: RendererConfig) -> None:
    aug = r.augment
    need(aug.pointwolf_anchors >= 1 and aug.pointwolf_sigma > 0, "renderer.augment.pointwolf_anchors",
         "need at least one anchor and a positive pointwolf_sigma")
    need(0 < aug.pointwolf_scale[0] <= aug.pointwolf_scale[1], "renderer.augment.pointwolf_scale",
         "need 0 < low <= high")


def _scale(r: RendererConfig) -> None:
    aug = r.augment
    need(0 < aug.scale[0] <= aug.scale[1], "renderer.augment.scale", f"need 0 < low <= high, got {aug.scale}")
    _probability(r, "scale_shift_prob")


def _shift(r: RendererConfig) -> None:  # of shift and camera_shift, one draw
    need(r.augment.shift >= 0, "renderer.augment.shift", f"must be >= 0, got {r.augment.shift}")


def _jitter(r: RendererConfig) -> None:
    need(r.augment.jitter >= 0, "renderer.augment.jitter", f"must be >= 0, got {r.augment.jitter}")
    _probability(r, "jitter_prob")


def _view(r: RendererConfig) -> None:
    view = r.view
    for key in ("azimuth", "elevation", "roll", "distance", "fov", "ortho_scale"):
        lo, hi = getattr(view, key)
        need(lo <= hi, f"renderer.view.{key}", f"range [{lo}, {hi}] has low > high")
    need(view.distance[0] > 0, "renderer.view.distance", "must be positive (camera to cloud centre)")
    need(view.fov[0] > 0 and view.fov[1] < 180, "renderer.view.fov", "must lie in (0, 180) degrees")
    need(view.ortho_scale[0] > 0, "renderer.view.ortho_scale", "must be positive")


def _window(r: RendererConfig) -> None:
    aug = r.augment
    need(finite(aug.window_scale[1]) and 0 < aug.window_scale[0] <= aug.window_scale[1],
         "renderer.augment.window_scale", f"need 0 < low <= high (published [0.5, 2.0]), got {list(aug.window_scale)}")
    need(finite(aug.window_shift) and aug.window_shift >= 0, "renderer.augment.window_shift",
         f"is a fraction of the window: must be >= 0 (published 0.2), got {aug.window_shift}")


def _depth_hue(r: RendererConfig) -> None:
    for key in ("depth_hue_saturation", "depth_hue_value"):
        lo, hi = getattr(r.augment, key)
        need(0 <= lo <= hi <= 1, f"renderer.augment.{key}", f"need 0 <= low <= high <= 1, got {(lo, hi)}")


def _point_size(r: RendererConfig) -> None:
    aug = r.augment
    need(0 < aug.radius_scale[0] <= aug.radius_scale[1], "renderer.augment.radius_scale",
         f"need 0 < low <= high, got {aug.radius_scale}")


# The built-in operations, in the order they run: the contest's (sub-sampling first, so that what follows sees only
# the kept points), then the camera (dr_fdsl/render/point_ops.py says what each does).
_CODE = "dr_fdsl.render.point_ops"
point_op("subsample", f"{_CODE}:subsample", keys=("subsample", "subsample_exact", "subsample_prob"),
         streams=(Stream.SUBSAMPLE_RATE, Stream.SUBSAMPLE, Stream.SUBSAMPLE_GATE), validate=_subsample)
point_op("instances", f"{_CODE}:instances", keys=("bank.<family>.instances", "map_jitter"),
         streams=(Stream.INSTANCE, Stream.INSTANCE_GREY, Stream.MAP_JITTER), validate=_instances)
point_op("corrupt", f"{_CODE}:corruptions", keys=("drop_local", "add_global", "add_local"),
         streams=(Stream.DROP_LOCAL, Stream.DROP_LOCAL_SIZES, Stream.DROP_LOCAL_CENTRES, Stream.ADD_GLOBAL,
                  Stream.ADD_GLOBAL_SOURCE, Stream.ADD_LOCAL, Stream.ADD_LOCAL_SIZES, Stream.ADD_LOCAL_CENTRES,
                  Stream.ADD_LOCAL_SIGMA, Stream.ADD_LOCAL_OFFSET), validate=_corrupt)
point_op("pointwolf", f"{_CODE}:point_wolf",
         keys=("pointwolf", "pointwolf_kind", "pointwolf_anchors", "pointwolf_sigma", "pointwolf_rotation",
               "pointwolf_scale", "pointwolf_shift"),
         streams=(Stream.WOLF_ANCHOR, Stream.WOLF_SCALE, Stream.WOLF_ROTATION, Stream.WOLF_SHIFT, Stream.WOLF_START,
                  Stream.WOLF_DROPOUT, Stream.WOLF_AXIS, Stream.WOLF_KERNEL_AXIS), validate=_pointwolf)
point_op("scale", f"{_CODE}:scale", keys=("scale", "scale_shift_prob"),
         streams=(Stream.SCALE, Stream.SCALE_SHIFT_GATE), validate=_scale)
point_op("shift", f"{_CODE}:object_shift", keys=("shift", "shift_frame", "scale_shift_prob"),
         streams=(Stream.SHIFT, Stream.SCALE_SHIFT_GATE), validate=_shift)
point_op("jitter", f"{_CODE}:jitter", keys=("jitter", "jitter_prob"), streams=(Stream.JITTER, Stream.JITTER_GATE),
         validate=_jitter)
point_op("view", f"{_CODE}:view", keys=("renderer.view.*",), streams=(Stream.ROTATION, Stream.DISTANCE, Stream.FOCAL),
         validate=_view)
point_op("camera_shift", f"{_CODE}:camera_shift", keys=("shift", "shift_frame", "scale_shift_prob"),
         streams=(Stream.SHIFT, Stream.SCALE_SHIFT_GATE))
point_op("project", f"{_CODE}:projection", keys=("renderer.view.projection", "renderer.view.pytorch3d_arithmetic"))
point_op("window", f"{_CODE}:window", keys=("window_shift", "window_scale", "dihedral"),
         streams=(Stream.WINDOW_SHIFT, Stream.WINDOW_SCALE, Stream.DIHEDRAL), validate=_window)
point_op("depth_hue", f"{_CODE}:depth_hue", keys=("depth_hue", "depth_hue_saturation", "depth_hue_value"),
         streams=(Stream.DEPTH_HUE,), validate=_depth_hue)
point_op("random_colors", f"{_CODE}:random_colors", keys=("random_colors",), streams=(Stream.RANDOM_COLORS,))
point_op("point_size", f"{_CODE}:point_size", keys=("radius_scale",), streams=(Stream.RADIUS_SCALE,),
         validate=_point_size)

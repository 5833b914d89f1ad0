"""The renderer's settings, torch-free: the sections ``renderer`` (:class:`RendererConfig`), ``renderer.view``,
``renderer.augment`` (composed with the sections of registered point operations), ``renderer.objects`` and
``renderer.perturbation``, and their checks (:func:`validate_renderer`; against a bank:
:func:`validate_against_bank`). :mod:`dr_fdsl.config` composes them into ``Config``; ``PointRenderer`` runs the
same checks for a config built in Python. Loading a config imports neither torch nor timm.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from dr_fdsl.families import FAMILIES
from dr_fdsl.modes import MODES
from dr_fdsl.render.point_ops_settings import POINT_OPS, pipeline
from dr_fdsl.settings import ADDED, NOT_CONTENT, compose, finite, need


@dataclass
class ViewConfig:
    """Where the camera looks from; every value is drawn per image from its view seed. Angles in degrees."""

    # "so3": uniform over all rotations; "euler": azimuth, elevation, roll from the ranges below; "none": fixed.
    rotation: Literal["so3", "euler", "none"] = "so3"
    azimuth: tuple[float, float] = (-180.0, 180.0)
    elevation: tuple[float, float] = (-90.0, 90.0)
    roll: tuple[float, float] = (0.0, 0.0)
    projection: Literal["perspective", "orthographic"] = "perspective"
    # Distance from the camera to the cloud's centroid, in cloud units (clouds lie in [-1, 1]^3).
    distance: tuple[float, float] = (3.0, 3.0)
    fov: tuple[float, float] = (45.0, 45.0)  # perspective: full field of view
    ortho_scale: tuple[float, float] = (0.8, 0.8)  # orthographic: NDC units per cloud unit
    # Perspective NDC as (x * focal) / depth, PyTorch3D's FoVPerspectiveCameras arithmetic, bit for bit, instead of
    # x * (focal / depth) (the default, kept so that earlier renders do not move by an ulp). One ulp of NDC moves a
    # fragment weight by ~1e-5 at radius 0.015: a render matched to a published PyTorch3D one needs true.
    pytorch3d_arithmetic: bool = field(default=False, metadata=ADDED)


@dataclass
class _Augment:
    """The built-in point operations' keys (see :data:`AugmentConfig`)."""

    scale: tuple[float, float] = (1.0, 1.0)  # isotropic scale factor range
    shift: float = 0.0  # max shift per axis, cloud units, after rotation
    subsample: tuple[float, float] = (1.0, 1.0)  # range of the fraction of points kept
    jitter: float = 0.0  # std of Gaussian noise per point, cloud units
    # PointWOLF-style local deformation: anchors drawn among the points, each with a random local scale,
    # rotation and shift, blended by a Gaussian kernel of width pointwolf_sigma.
    pointwolf: bool = False
    pointwolf_anchors: int = 4
    pointwolf_sigma: float = 0.5
    pointwolf_scale: tuple[float, float] = (0.8, 1.2)
    pointwolf_rotation: float = 10.0  # max angle per axis, degrees
    pointwolf_shift: float = 0.1
    # Points of another random category replace this fraction of each cloud's points (with their colours).
    mix: float = 0.0
    # --- As published by the SIGNATE contest's 4th-place solution (configs/contest_pytorch3d.yaml) and the work it
    # cites; dr_fdsl/render/augment.py and corrupt.py. Every default leaves the images as they were.
    # probability that an image is sub-sampled at all (its rate drawn in `subsample`)
    subsample_prob: float = field(default=1.0, metadata=ADDED)
    # False: each point kept with probability rate. True: exactly int(N * rate) points kept, a uniform random subset
    # (the contest's np.random.choice(N, int(N * rate), replace=False)).
    subsample_exact: bool = field(default=False, metadata=ADDED)
    # one coin per image switches scale and shift on together (the contest's p=0.5)
    scale_shift_prob: float = field(default=1.0, metadata=ADDED)
    # "camera": the shift is added after the rotation. "object": p * scale + shift before the rotation (the contest).
    shift_frame: Literal["camera", "object"] = field(default="camera", metadata=ADDED)
    # probability that an image gets the Gaussian jitter (the contest's noise: 0.01, 0.5)
    jitter_prob: float = field(default=1.0, metadata=ADDED)
    # "style": the PointWOLF-style deformation above. "published": PointWOLF as Kim et al. (2021) publish it
    # (mlvlab/PointWOLF, the contest's copy): farthest-point-sampled anchors among the kept points, per-anchor
    # random axes and transform dropout, scales drawn in pointwolf_scale (published: [1, 3]), a random projection
    # axis for the kernel, the cloud re-centred and scaled into the unit ball. Published values: anchors 4,
    # sigma 0.5, scale [1.0, 3.0], rotation 10, shift 0.25.
    pointwolf_kind: Literal["style", "published"] = field(default="style", metadata=ADDED)
    # ModelNet-C corruptions (Ren, Pan & Liu 2022, jiawei-ren/ModelNet-C build_modelnetc/corrupt_utils.py), in
    # object space after sub-sampling; their published levels 0..4 are drop_local = add_local = 100 * (level + 1)
    # and add_global = 10 * (level + 1) points. Added points borrow the colour and radius of a point of the cloud.
    drop_local: int = field(default=0, metadata=ADDED)  # points removed in 1..7 clusters around random points
    add_global: int = field(default=0, metadata=ADDED)  # points added uniformly in the unit ball
    # points added in 1..7 Gaussian clusters (sigma U(0.075, 0.125)) around random points
    add_local: int = field(default=0, metadata=ADDED)
    # The contest's colorize_point_cloud: hue from depth (nearest 255, farthest 0, over the image's drawn points),
    # one saturation and value per image drawn in these ranges, through OpenCV's 8-bit HSV -> RGB; it multiplies
    # the learnable colour (white: the published colours exactly).
    depth_hue: bool = field(default=False, metadata=ADDED)
    depth_hue_saturation: tuple[float, float] = field(default=(0.3, 1.0), metadata=ADDED)
    depth_hue_value: tuple[float, float] = field(default=(0.5, 1.0), metadata=ADDED)
    # per-image factor on every point's radius (random point size)
    radius_scale: tuple[float, float] = field(default=(1.0, 1.0), metadata=ADDED)
    # Anderson & Farrell's window and flips, on the projected points (dr_fdsl/render/window.py): the rendering
    # window is shifted by U(-window_shift, window_shift) of its extent and scaled by U(window_scale) on each
    # axis independently (published IFSGenerator: translate 0.2, scale [0.5, 2.0]); dihedral: a random transpose,
    # then up-down and left-right flips, each with probability 0.5 (its random_flips).
    # Family svd2d only (dr_fdsl/families/svd2d/instances.py): one map of the category's system, chosen per image,
    # scaled by U(map_jitter) (published IFSGenerator jitter_params=True: [0.8, 1.1], up to 4 draws until it stays
    # contractive, else unchanged); the points are its chaos game replayed with the jittered maps, in its own window.
    map_jitter: tuple[float, float] = field(default=(1.0, 1.0), metadata=ADDED)
    window_scale: tuple[float, float] = field(default=(1.0, 1.0), metadata=ADDED)
    window_shift: float = field(default=0.0, metadata=ADDED)
    dihedral: bool = field(default=False, metadata=ADDED)
    # A non-learnt baseline (3D-OFDB's random-texture idea): every colour times uniform random RGB, one per image
    # ("image") or one per point of each image ("point"), from the image's key (white tables: the random colours).
    # A random point size per image is radius_scale.
    random_colors: Literal["none", "image", "point"] = field(default="none", metadata=ADDED)


AugmentConfig = compose(
    "AugmentConfig", _Augment, [(op.name, op.settings) for op in POINT_OPS.values() if op.settings is not None],
    module=__name__,
    doc="""Point-cloud augmentations, drawn per image from its view seed. The defaults switch every one off.

    The built-in point operations' keys are flat fields (``renderer.augment.jitter``); an operation registered
    later with its own settings (:func:`dr_fdsl.render.point_ops_settings.point_op`) has its section
    ``renderer.augment.<name>``, composed from ``POINT_OPS`` in its order.
    """)


@dataclass
class ObjectsConfig:
    """Multi-instance images (Anderson & Farrell's MultiGenerator; dr_fdsl/render/multi.py): each image holds 1 to
    ``max`` objects (a count uniform over 1..max), object 0 its own category and the others distinct categories,
    each drawn from its own view seed, scaled to U(``scale``) of the image and centred at U(-offset, offset) in NDC
    per axis (1.0: anywhere in the image), later objects in front. ``max: 0`` switches it off."""

    max: int = 0
    scale: tuple[float, float] = (0.15, 0.6)
    offset: float = 1.0


@dataclass
class PerturbationConfig:
    """A learnt shape perturbation (family onepfrac: :class:`dr_fdsl.families.onepfrac.instances.OnePFracReplay`):
    the size ``m`` of every category's perturbation, shared by all categories (no category owns it, so it cannot
    write the label into the image), the factors ``1 + m u`` with ``u`` the category's unit draw
    (``m = bank.onepfrac.delta``: the bank's categories). ``m`` starts at ``bank.onepfrac.delta`` and ascends the
    objective's loss under ``renderer.mode=adversarial`` (the only mode it takes), held in ``budget`` by a
    projection."""

    # [low, high] of m; [0, 0]: off (the bank's fixed delta, the published pixel snap)
    budget: tuple[float, float] = (0.0, 0.0)
    # "all": one m; "map": one per map; "parameter": one per map and parameter a..f (each in the budget)
    per: Literal["all", "map", "parameter"] = "all"
    # whether the colour and radius tables learn too (by the same mode); false: the perturbation alone
    tables: bool = False

    @property
    def on(self) -> bool:
        return tuple(self.budget) != (0.0, 0.0)


MAX_POINTS_PER_PIXEL = 150  # PyTorch3D's kernels hold at most this many fragments per pixel


# The registered renderer modes (dr_fdsl/modes/__init__.py), in registry order: a new mode is one registration.
ModeName = Literal[tuple(MODES)]
LEAK_FORMS = ("confusion", "moments")  # renderer.leak_form
LeakForm = Literal[LEAK_FORMS]


@dataclass
class RendererConfig:
    """The differentiable point renderer: learnable per-point colours and radii, PyTorch3D compositing."""

    # Which gradient reaches the rendering tables: one module per mode in dr_fdsl/modes/ (registered in MODES).
    # "match": they descend a distance between rendered and target-domain images (section match, dr_fdsl/match.py).
    mode: ModeName = field(default="frozen", metadata=NOT_CONTENT)
    image_size: int = 224
    points_per_pixel: int = 8
    compositor: Literal["alpha", "norm_weighted"] = "alpha"
    # "pytorch3d": rasterize_points (naive kernel on CPU, binned on CUDA). "sort": the same fragments from
    # footprint expansion and a (pixel, depth) sort in tensor ops (dr_fdsl/render/raster_sort.py). "auto": sort on
    # the CPU, pytorch3d on CUDA. The same fragments bit for bit, so every choice keys caches as "pytorch3d" did.
    raster_backend: Literal["auto", "pytorch3d", "sort"] = field(default="auto", metadata={"content_as": "pytorch3d"})
    # Radii are NDC units (the image spans [-1, 1]); kept in [radius_min, radius_max] by a scaled squash (renderer.py).
    radius_init: float = 0.015
    radius_min: float = 0.005
    radius_max: float = 0.05
    # Colours are kept in (0, 1) by an algebraic sigmoid; "palette": each category draws palette_size random colours;
    # "bank": each point's grey level from the bank (families that store one, e.g. visualatom's orbit greys).
    color_init: Literal["white", "grey", "random", "palette", "bank"] = "white"
    palette_size: int = 4
    share_colors: bool = False  # one colour table for all categories instead of one per category
    share_radii: bool = False
    init_seed: int = 0
    # "color": background_color; "random_color": one random colour per image; "noise": uniform noise per
    # pixel in [0, background_noise]. Composited softly through the transmittance.
    # "diamond_square": a coloured diamond-square fractal per image (dr_fdsl/render/background.py), as published by
    # diamond_square_variant: "contest" (the contest's notebooks/_diamondsquare.py) or "anderson" (Anderson &
    # Farrell's fractal-pretraining, fractal_learning/fractals/diamondsquare.py).
    background: Literal["color", "random_color", "noise", "diamond_square"] = "color"
    background_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background_noise: float = 0.2
    diamond_square_variant: Literal["contest", "anderson"] = field(default="contest", metadata=ADDED)
    # How the colour table holds colours (renderer.py, color_values): "squash": logits through an algebraic sigmoid,
    # initial values kept 1e-3 inside (0, 1) (white is 0.999). "clamp": the colours themselves, clamped to [0, 1]
    # and projected back into it after every renderer step: every initial colour is held exactly (white is 1.0).
    # "residual": a change from the initial colour, starting at 0, bounded as clamp is: every colour moves at the
    # same rate wherever it starts (squash's slope at 0.999 is 1.3e-4). "auto": residual where the tables learn,
    # squash in mode frozen (whose renders, static exports and checkpoints keep their values and keys).
    color_param: Literal["auto", "squash", "clamp", "residual"] = field(default="auto", metadata=ADDED)
    view: ViewConfig = field(default_factory=ViewConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig, metadata=ADDED)
    # Optimisation of the rendering parameters (modes "joint" and "adversarial"): SparseAdam on the logits
    # (lazy: only the rows of the categories a step drew move), warm-up and cosine like the backbone.
    lr: float = field(default=1e-2, metadata=NOT_CONTENT)
    # "adversarial": the renderer ascends the loss through a gradient reversal of this scale, and pays
    # anchor_penalty * mean squared distance of its logits from their initial values.
    adversarial_scale: float = field(default=1.0, metadata=NOT_CONTENT)
    anchor_penalty: float = field(default=1e-2, metadata=NOT_CONTENT)
    # How the radius table holds radii, as color_param: "squash": radius_min + span * squash(logit); "residual":
    # radius_init + span * delta, delta from 0, clamped to [radius_min, radius_max] and projected back after every
    # renderer step (span = radius_max - radius_min: radii and colours move the same fraction of their range).
    radius_param: Literal["auto", "squash", "residual"] = field(default="auto", metadata=ADDED)
    # > 0: the renderer pays this times the leakage probe's cross-entropy against uniform predictions (domain
    # confusion; the probe's weights held fixed in that term): it learns images whose colour and size
    # statistics do not name the category. Modes whose tables descend the objective's loss (joint, match.joint).
    leak_penalty: float = field(default=0.0, metadata=NOT_CONTENT)
    # Mode frozen: draw with a trained run's learnt colour and radius tables (its output_dir, i.e. its newest
    # checkpoint, or one checkpoint folder; checked against its manifest) instead of the config's initial ones
    # (dr_fdsl/tables.py; tools/render_dataset.py --run writes the config that sets it). Not in content keys: the
    # tables' digest is, where it matters (static datasets, checkpoints).
    tables: str = field(default="", metadata=NOT_CONTENT)
    # Family onepfrac: its perturbation's size learnt within a budget (PerturbationConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    # What renderer.leak_penalty pays for (dr_fdsl/probe.py): "confusion": the probe's cross-entropy against uniform
    # predictions (a target that moves as the probe retrains); "moments": the between-category share of the variance
    # of the statistics the probe reads (no probe weights: its minimum, equal category means, stays put).
    leak_form: LeakForm = field(default="confusion", metadata=NOT_CONTENT)


def instances_on(bank_settings: dict) -> bool:
    """Whether a bank's settings (``content_settings(cfg.bank)`` or ``PointBank.settings``) ask for instances
    (always for a family whose ``Family.always_instances`` is set: ``onepfrac``)."""
    family = bank_settings.get("family")
    if family in FAMILIES and FAMILIES[family].always_instances:
        return True
    section = bank_settings.get(bank_settings.get("family"), {})
    return section.get("instances", "none") not in ("none", False)


def validate_against_bank(r: RendererConfig, bank_settings: dict, num_classes: int, num_points: int,
                          colors: bool) -> None:
    """Every rule between the renderer's settings and the bank it draws, written once. Run at load against the
    bank the config will build (``content_settings(cfg.bank)``, its sizes, whether its family stores colours),
    before any work; and by ``PointRenderer`` against the bank it is given (``PointBank.settings``, its tensors:
    a bank built in Python, or one read from a cache).

    ``colors``: whether the bank holds each point's grey level (``Family.colors`` at load, a ``grey`` param then).
    """
    family = bank_settings.get("family")
    spec = FAMILIES[family] if family in FAMILIES else None  # noqa: SIM401  (Registry.get raises for an unknown one)
    aug = r.augment
    need(aug.drop_local < num_points, "renderer.augment.drop_local",
         f"{aug.drop_local} points would empty clouds of bank.num_points={num_points}; use fewer "
         "(ModelNet-C's levels: 100 to 500)")
    need(r.objects.max <= num_classes, "renderer.objects.max",
         f"objects come from distinct categories: needs at most bank.num_classes={num_classes}, got {r.objects.max}")
    if r.color_init == "bank":
        what = f"family {family!r}" if family else "this bank's family"
        need(colors, "renderer.color_init",
             f"'bank' takes each point's colour from the bank, and {what} stores none: this bank has none (no "
             f"'grey' param); use a family that does ({', '.join(n for n, f in FAMILIES.items() if f.colors)}) or "
             "another color_init")
    replaying = [n for n, f in FAMILIES.items() if f.replays_maps]
    need(aug.map_jitter == (1.0, 1.0) or (spec is not None and spec.replays_maps), "renderer.augment.map_jitter",
         f"needs a bank of family {' or '.join(replaying)}: it replays a system's chaos game with one map scaled, "
         f"and only {', '.join(replaying)} stores its maps and their order; got bank.family={family!r}; set it to "
         "[1, 1]")
    if instances_on(bank_settings):
        what = f"bank.family={family}" if spec is not None and spec.always_instances else f"bank.{family}.instances"
        need(aug.mix == 0, "renderer.augment.mix",
             f"must be 0 with {what} (a mixed-in point would need the other category's instance, "
             f"which is not drawn); got {aug.mix}")
    learning = [n for n, f in FAMILIES.items() if f.learnt_perturbation]
    need(not r.perturbation.on or (spec is not None and spec.learnt_perturbation), "renderer.perturbation.budget",
         f"learns the size of a family's perturbation, which only bank.family={' or '.join(learning)} has; got "
         f"bank.family={family!r}; set it to [0, 0]")
    if spec is not None and spec.renderer_rules is not None:
        spec.renderer_rules(bank_settings[family], r)  # the family's own (visualatom's instances and colours)


def table_param(r: RendererConfig, key: str) -> str:
    """``renderer.color_param`` or ``renderer.radius_param`` (``key``) as the renderer uses it: ``auto`` is
    ``residual`` where the tables learn and ``squash`` in mode frozen."""
    value = getattr(r, key)
    return value if value != "auto" else ("squash" if r.mode == "frozen" else "residual")


def canonical_tables(r: RendererConfig) -> RendererConfig:
    """``r`` with ``color_param``/``radius_param`` written as ``auto`` where they name what ``auto`` resolves to in
    ``r.mode`` (an explicit ``squash`` under frozen, ``residual`` where the tables learn): the same tables, so the
    same content key (checkpoint fingerprints, static datasets)."""
    for key in ("color_param", "radius_param"):
        if getattr(r, key) != "auto" and table_param(r, key) == table_param(replace(r, **{key: "auto"}), key):
            r = replace(r, **{key: "auto"})
    return r


def validate_renderer(r: RendererConfig) -> None:
    """The renderer section's checks (also run by ``PointRenderer`` for configs built in Python)."""
    need(r.image_size >= 1, "renderer.image_size", f"must be positive, got {r.image_size}")
    need(1 <= r.points_per_pixel <= MAX_POINTS_PER_PIXEL, "renderer.points_per_pixel",
         f"must be in [1, {MAX_POINTS_PER_PIXEL}] (PyTorch3D's limit), got {r.points_per_pixel}")
    need(0 < r.radius_min <= r.radius_init <= r.radius_max, "renderer.radius_init",
         f"need 0 < radius_min <= radius_init <= radius_max, got {r.radius_min}, {r.radius_init}, {r.radius_max}")
    need(r.palette_size >= 1, "renderer.palette_size", f"must be positive, got {r.palette_size}")
    need(not (r.color_init == "bank" and r.share_colors), "renderer.share_colors",
         "must be false with renderer.color_init=bank (each category's points have their own colours)")
    need(all(0 <= c <= 1 for c in r.background_color), "renderer.background_color", "channels must be in [0, 1]")
    need(0 <= r.background_noise <= 1, "renderer.background_noise", "must be in [0, 1]")
    need(finite(r.lr) and r.lr > 0, "renderer.lr", f"must be a positive number, got {r.lr}")
    need(r.adversarial_scale > 0, "renderer.adversarial_scale", f"must be positive, got {r.adversarial_scale}")
    need(r.anchor_penalty >= 0, "renderer.anchor_penalty", f"must be >= 0, got {r.anchor_penalty}")
    need(finite(r.leak_penalty) and r.leak_penalty >= 0, "renderer.leak_penalty",
         f"must be a number >= 0 (0: off), got {r.leak_penalty}")
    need(r.leak_form in LEAK_FORMS, "renderer.leak_form",
         f"must be one of {', '.join(LEAK_FORMS)} (what renderer.leak_penalty pays for), got {r.leak_form!r}")
    need(not r.tables or r.mode == "frozen", "renderer.tables",
         f"draws a trained run's tables as they are: it needs renderer.mode=frozen, got {r.mode!r} (to train a run "
         "further, resume it: train.py --resume)")
    need(0 <= r.augment.mix < 1, "renderer.augment.mix",
         f"fraction of points from another category must be in [0, 1), got {r.augment.mix}")
    for name in pipeline():  # each point operation's own checks (renderer.view.*, renderer.augment.*)
        op = POINT_OPS[name]
        if op.validate is not None:
            op.validate(r)
    pert = r.perturbation
    low, high = pert.budget
    need(finite(low) and finite(high) and 0 <= low <= high < 1, "renderer.perturbation.budget",
         f"need 0 <= low <= high < 1 (a perturbation's size; [0, 0]: off), got {list(pert.budget)}")
    need(not pert.on or r.mode == "adversarial", "renderer.perturbation.budget",
         f"the perturbation's size is learnt by renderer.mode=adversarial (it ascends the loss within the budget; "
         f"descending it would only widen the perturbation), got renderer.mode={r.mode}")
    obj = r.objects
    need(0 <= obj.max <= 16, "renderer.objects.max", f"must be in [0, 16] (0: off; published 5), got {obj.max}")
    need(finite(obj.scale[1]) and 0 < obj.scale[0] <= obj.scale[1], "renderer.objects.scale",
         f"need 0 < low <= high (fractions of the image; published [0.15, 0.6]), got {list(obj.scale)}")
    need(finite(obj.offset) and obj.offset >= 0, "renderer.objects.offset",
         f"must be >= 0 (NDC; 1.0: centres anywhere in the image), got {obj.offset}")

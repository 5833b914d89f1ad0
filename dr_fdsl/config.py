"""The run's configuration: ``Config``, composed of the sections of every part, and the checks that relate them.

The loader (YAML, includes, dotted overrides, types, did-you-mean, :func:`need`) is
:mod:`dr_fdsl.settings`, which knows no section. Each part owns its section's dataclass and checks next to its
code, in a module that imports no torch: a family's ``bank.<family>`` in ``dr_fdsl/families/<family>/settings.py``,
an objective's (``mim``, ``sit``) in ``dr_fdsl/objectives/<name>_settings.py``, a renderer mode's (``match``) in
``dr_fdsl/modes/<name>_settings.py``. ``BankConfig`` and ``Config`` are composed from the registries
(``FAMILIES``, ``OBJECTIVES``, ``MODES``), in their order; this module holds the sections of the core (renderer,
model, optimiser, image augmentation, data, train) and the checks across sections. Loading a config imports
neither torch nor timm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from dr_fdsl import memory
from dr_fdsl.errors import ConfigError
from dr_fdsl.families import FAMILIES
from dr_fdsl.families.fractaldb.settings import FractalDBConfig  # noqa: F401  (re-exported, as below)
from dr_fdsl.families.ifs3d.settings import IFS3DConfig  # noqa: F401
from dr_fdsl.families.ofdb.settings import OFDBConfig  # noqa: F401
from dr_fdsl.families.svd2d.settings import SVD2DConfig  # noqa: F401
from dr_fdsl.families.visualatom.settings import VisualAtomConfig  # noqa: F401
from dr_fdsl.memory import gib, need_bytes
from dr_fdsl.modes import MODES
from dr_fdsl.modes.match_settings import MatchConfig, validate_match  # noqa: F401
from dr_fdsl.objectives import OBJECTIVES
from dr_fdsl.objectives.mim_settings import MIMConfig  # noqa: F401
from dr_fdsl.objectives.sit_settings import SiTConfig  # noqa: F401
from dr_fdsl.settings import (  # noqa: F401  (re-exported: the names the code and the tests import from here)
    ADDED,
    MOVED_KEYS,
    NOT_CONTENT,
    add_config_args,
    chosen_by,
    compose,
    config_text,
    content_settings,
    finite,
    from_dict,
    need,
    parse_overrides,
    save_config,
    to_dict,
    used_by,
    used_settings,
)
from dr_fdsl.settings import load_config as _load

# --------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Bank:
    """The fields of ``bank`` that are not a family's (see :data:`BankConfig`)."""

    family: str = "ifs3d"
    num_classes: int = 1000
    num_points: int = 10000
    seed: int = 0
    # Where built banks are cached, keyed by the settings above.
    cache_dir: str = field(default="cache/banks", metadata=NOT_CONTENT)


BankConfig = compose(
    "BankConfig", _Bank, [(name, family.settings) for name, family in FAMILIES.items()], module=__name__,
    metadata=chosen_by("family"),
    doc="""The bank of point sets: one per category, built by a formula family (``family``, see dr_fdsl/families).

    The settings of the chosen family live in the section named after it (``bank.ifs3d`` for ``ifs3d``), one per
    registered family (``FAMILIES``, in its order); the sections of other families are ignored.
    """)


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
class AugmentConfig:
    """Point-cloud augmentations, drawn per image from its view seed. The defaults switch every one off."""

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
    """A learnt shape perturbation (family onepfrac: :class:`dr_fdsl.families.onepfrac.instances.OnePFracReplay`): the size
    ``m`` of every category's perturbation, shared by all categories (no category owns it, so it cannot write the
    label into the image), the factors ``1 + m u`` with ``u`` the category's unit draw (``m = bank.onepfrac.delta``:
    the bank's categories). ``m`` starts at ``bank.onepfrac.delta`` and ascends the objective's loss under
    ``renderer.mode=adversarial`` (the only mode it takes), held in ``budget`` by a projection."""

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


@dataclass
class ModelConfig:
    """The backbone: any timm model by name, with ``num_classes`` = categories and the renderer's image size."""

    name: str = "vit_tiny_patch16_224"
    drop_path: float = 0.1
    # A ViT's patch size in px (timm's ``patch_size``), 0: the model's own. Small images need small patches: timm's
    # test_vit has 16 px patches, four tokens at 32 px; with 4 px patches it sees 64.
    patch_size: int = field(default=0, metadata=ADDED)


@dataclass
class OptimConfig:
    """Optimisation of the objective's networks. The FDSL recipes' default: AdamW, lr scaled by total batch / 512,
    linear warm-up then cosine decay. FractalDB's ResNet recipes use ``name: sgd`` (momentum 0.9); the masked-image
    seed uses ``name: adam, betas: [0.9, 0.99], warmup_lr_init: 1e-9, schedule: step`` (a final constant phase)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"  # sgd: heavy-ball momentum (not Nesterov)
    lr: float = 1e-3  # for a total batch of 512; the run uses lr * total_batch / 512
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)  # adamw, adam
    momentum: float = 0.9  # sgd
    warmup_steps: int = 100  # optimiser steps
    warmup_lr_init: float = -1.0  # learning rate the warm-up starts from; negative: optim.min_lr
    schedule: Literal["cosine", "step"] = "cosine"  # step: constant lr, then final_lr for the last final_steps
    min_lr: float = 1e-6  # cosine: the final learning rate
    final_steps: int = 0  # step: length of the final constant phase, optimiser steps
    final_lr: float = 0.0  # step: its learning rate (scaled by total batch / 512 like lr)
    clip_grad: float = 1.0  # max global grad norm of backbone and of renderer, each; 0 switches it off


@dataclass
class RandomResizedCropConfig:
    """timm's ``RandomResizedCropAndInterpolation`` of the rendered image back to its own size: area fraction
    U(scale), log-uniform aspect ratio, 10 tries then the centre crop; resampled as PIL resizes
    (``image_aug.interpolation``)."""

    enabled: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)


@dataclass
class ShiftScaleRotateConfig:
    """albumentations' ``ShiftScaleRotate`` (its defaults): with probability ``p``, rotate by U(-rotate_limit,
    rotate_limit) degrees and scale by 1 + U(-scale_limit, scale_limit) about the centre, shift by
    U(-shift_limit, shift_limit) of the size; bilinear, reflect-101 border."""

    p: float = 0.0
    shift_limit: float = 0.0625
    scale_limit: float = 0.1
    rotate_limit: float = 45.0


@dataclass
class BrightnessContrastConfig:
    """albumentations' ``RandomBrightnessContrast`` (brightness_by_max): with probability ``p``,
    ``level * (1 + U(-contrast_limit, contrast_limit)) + 255 * U(-brightness_limit, brightness_limit)``."""

    p: float = 0.0
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2


@dataclass
class HueSaturationValueConfig:
    """albumentations' ``HueSaturationValue`` on uint8 images: with probability ``p``, hue shifted by
    U(-hue_shift_limit, hue_shift_limit) in OpenCV's 0..180 units, saturation and value by their limits in 0..255."""

    p: float = 0.0
    hue_shift_limit: float = 20.0
    sat_shift_limit: float = 30.0
    val_shift_limit: float = 20.0


@dataclass
class DistortionConfig:
    """albumentations' ``OneOf([OpticalDistortion(), GridDistortion()])``: with probability ``p``, one of the two,
    equally likely, with their defaults (optical: k = U(-optical_distort_limit, ...), principal point shifted by
    round(U(-optical_shift_limit, ...)) pixels; grid: ``grid_steps`` cells per side, each stretched by
    1 + U(-grid_distort_limit, ...)); bilinear, reflect-101 border."""

    p: float = 0.0
    optical_distort_limit: float = 0.05
    optical_shift_limit: float = 0.05
    grid_steps: int = 5
    grid_distort_limit: float = 0.3


@dataclass
class ImageAugConfig:
    """Image augmentations applied on the device after rendering, per image, from torch's global generator (which
    Accelerate checkpoints). In order: random resized crop, transpose, flips, the contest's albumentations
    operations (shift-scale-rotate, brightness/contrast, HSV, distortion), RandAugment, then normalisation, random
    erasing and Mixup/CutMix (timm's). Every new operation is off by default."""

    mixup: float = 0.8  # Beta(alpha, alpha); 0 switches it off
    cutmix: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    random_erasing: float = 0.25
    hflip: float = 0.5
    vflip: float = 0.0
    # probability of swapping rows and columns (albumentations' Transpose)
    transpose: float = field(default=0.0, metadata=ADDED)
    random_resized_crop: RandomResizedCropConfig = field(default_factory=RandomResizedCropConfig, metadata=ADDED)
    shift_scale_rotate: ShiftScaleRotateConfig = field(default_factory=ShiftScaleRotateConfig, metadata=ADDED)
    brightness_contrast: BrightnessContrastConfig = field(default_factory=BrightnessContrastConfig, metadata=ADDED)
    hue_saturation_value: HueSaturationValueConfig = field(default_factory=HueSaturationValueConfig, metadata=ADDED)
    distortion: DistortionConfig = field(default_factory=DistortionConfig, metadata=ADDED)
    # timm's RandAugment config string, parsed by timm (e.g. "rand-m9-mstd0.5-inc1"); empty: off.
    randaugment: str = field(default="", metadata=ADDED)
    # Resampling of random_resized_crop and of RandAugment's rotate/shear/translate, as timm's create_transform
    # passes its --interpolation to both ("random": bilinear or bicubic per image and operation).
    interpolation: Literal["bicubic", "bilinear", "random"] = field(default="bicubic", metadata=ADDED)

    @property
    def mixing(self) -> bool:
        """Whether Mixup/CutMix runs at all."""
        return self.mix_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


@dataclass
class DataConfig:
    """Where training images come from: rendered in the step, or read from a dataset written by
    ``tools/render_dataset.py`` (the classic static pipeline). Both feed the same step."""

    source: Literal["render", "static"] = "render"
    path: str = field(default="", metadata=NOT_CONTENT)  # static: the dataset folder
    # render: 0 draws fresh view seeds in [0, 2^62) every step; V > 0 draws seeds 0..V-1 only, which is the
    # (category, view) universe of a static dataset exported with --views V. static: 0 draws from all the
    # dataset's views, V from its first V (more than it holds is refused when it is opened).
    views_per_class: int = 0
    quantize: bool = False  # round rendered images to 8 bits as PNG files are (straight-through gradients)
    workers: int = field(default=2, metadata=NOT_CONTENT)  # static: data-loader worker processes (own seeds)
    # Grouped draws (dr_fdsl/view_order.py): each drawn category appears with this many different view seeds,
    # adjacent in the micro-batch, categories distinct within it (positives of a contrastive task, e.g. sit).
    views_per_category: int = field(default=1, metadata=ADDED)
    # Repeated augmentation (DeiT, timm's RepeatAugSampler): each (category, view seed) appears this many times
    # in the micro-batch, adjacent; the on-device augmentations differ per copy. 1, 1: the ungrouped stream.
    repeated_aug: int = field(default=1, metadata=ADDED)


@dataclass
class TrainConfig:
    """The step-based loop. Steps are optimiser steps; ``batch_size`` is per process and per micro-batch."""

    # What a step computes from the rendered images (dr_fdsl/objectives): "classify" is classification of the
    # categories with image_aug's Mixup/CutMix, label smoothing and the leakage probe; "mim" masked-image
    # modelling (section mim); "classify+mim" both on one backbone.
    objective: str = "classify"
    max_steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    # bf16 autocasts on CPU and CUDA; fp16 needs a CUDA GPU (on a CPU Accelerate would run float32: refused)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = 10
    eval_every: int = 200
    eval_images: int = 512  # held-out (category, view) pairs with view seeds never drawn in training
    image_every: int = 200  # image grid of fixed (category, view) renders in TensorBoard
    ckpt_every: int = 500
    keep_checkpoints: int = 3  # this run's newest checkpoints kept; 0 keeps every one
    probe: bool = True  # the colour-statistics leakage probe
    probe_lr: float = 1e-2  # in (0, 1]; a diverged probe logs probe/diverged = 1 and NaN accuracies
    progress: bool = True


@dataclass
class _Run:
    """The sections of the core (see :data:`Config`)."""

    output_dir: str = "runs/default"
    seed: int = 0
    bank: BankConfig = field(default_factory=BankConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    image_aug: ImageAugConfig = field(default_factory=ImageAugConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Every check of the config (:func:`validate_config`), run by :func:`load_config`."""
        validate_config(self)


# The sections that objectives and renderer modes own (mim: train.objective=mim and classify+mim; sit; match:
# renderer.mode=match), after the core's, in registry order.
Config = compose(
    "Config", _Run, [(key, section, used_by(chooser)) for registry, chooser in ((OBJECTIVES, "train.objective"),
                                                                               (MODES, "renderer.mode"))
                     for spec in registry.specs() for key, section in spec.sections.items()], module=__name__,
    doc="""Everything a run needs. ``output_dir`` receives the resolved config, logs and checkpoints. Its sections:
    the core's, then those of the registered objectives and renderer modes (``mim``, ``sit``, ``match``).""")


# --------------------------------------------------------------------------------------------------------
# Building and checking
# --------------------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type | None = None,
                validate: bool = True) -> Any:
    """Defaults, then the YAML file at ``path`` (and what it includes), then dotted ``overrides``; every check
    runs before returning (:func:`dr_fdsl.settings.load_config` with ``cls`` a :class:`Config` by default).

    ``cls`` may be another dataclass (e.g. the fine-tuning settings); ``validate`` runs its ``validate()`` (for a
    :class:`Config`, :func:`validate_config`).
    """
    return _load(path, overrides, Config if cls is None else cls, validate)


# --------------------------------------------------------------------------------------------------------
# What changes the generated images, and every check of a value (run by load_config, before any work)
# --------------------------------------------------------------------------------------------------------


# Refuse sizes whose buffers would not fit in memory, with an estimate (bytes per element x count; dr_fdsl/memory.py).
_FRAGMENT_BYTES = 8 + 4 + 4 + 4  # packed index, depth, squared distance, weight per (pixel, slot)
_PIXEL_BYTES = 3 * 4 * 4  # float32 RGB: the image, its augmented copy, and their gradients
_POINT_BYTES = 16 * 4  # float32 per point: position, camera position, NDC, colour, radius and gradients
# The leakage probe's Adam moves each weight by up to lr per step; its inputs are standardised (BatchNorm), so a
# step above 1 moves a logit by more than its useful range: measured, 10 already gives losses of 20-100 at 4
# classes (chance: 1.4), 1e30 losses of 1e30 with finite weights, and its accuracy is then chance.
PROBE_LR_MAX = 1.0


def validate_config(cfg: Config) -> None:
    """Every range and consistency check of a run's config. Raises :class:`ConfigError` naming the key and fix."""

    need(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    need(bool(cfg.output_dir.strip()), "output_dir", "must name a folder")

    t = cfg.train
    for key in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "image_every", "ckpt_every",
                "eval_images"):
        need(getattr(t, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(t, key)}")
    need(t.keep_checkpoints >= 0, "train.keep_checkpoints", f"must be >= 0 (0 keeps all), got {t.keep_checkpoints}")
    need(finite(t.probe_lr) and 0 < t.probe_lr <= PROBE_LR_MAX, "train.probe_lr",
         f"must be in (0, {PROBE_LR_MAX}] (the probe's Adam moves every weight by up to probe_lr per step, on "
         f"standardised statistics: a larger step overshoots every minimum and the probe diverges; default 1e-2), "
         f"got {t.probe_lr}")

    # The renderer's and the bank's own keys first: other checks read their sizes (image_size, num_classes), and an
    # out-of-range size must be named itself, not as the key whose check it breaks (e.g. distortion.grid_steps).
    validate_renderer(cfg.renderer)
    _validate_bank_size(cfg)
    validate_bank(cfg.bank)

    m = cfg.model
    need(finite(m.drop_path) and 0 <= m.drop_path < 1, "model.drop_path", f"must be in [0, 1), got {m.drop_path}")
    need(m.patch_size >= 0, "model.patch_size", f"must be >= 0 (0: the model's own), got {m.patch_size}")
    need(m.patch_size == 0 or cfg.renderer.image_size % m.patch_size == 0, "model.patch_size",
         f"{m.patch_size} does not divide renderer.image_size={cfg.renderer.image_size}")

    o = cfg.optim
    need(finite(o.lr) and o.lr > 0, "optim.lr", f"must be a positive number, got {o.lr}")
    need(finite(o.min_lr) and 0 <= o.min_lr <= o.lr, "optim.min_lr", f"must be in [0, optim.lr], got {o.min_lr}")
    need(finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    need(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    need(finite(o.warmup_lr_init) and o.warmup_lr_init <= o.lr, "optim.warmup_lr_init",
         f"must be <= optim.lr (negative: start from optim.min_lr), got {o.warmup_lr_init}")
    need(all(finite(b) and 0 <= b < 1 for b in o.betas), "optim.betas", f"must be two numbers in [0, 1), got "
         f"{list(o.betas)}")
    need(finite(o.momentum) and 0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    need(finite(o.final_lr) and 0 <= o.final_lr <= o.lr, "optim.final_lr", f"must be in [0, optim.lr], got "
         f"{o.final_lr}")
    if o.schedule == "step":
        need(0 <= o.final_steps <= t.max_steps - o.warmup_steps, "optim.final_steps", f"must be in [0, "
             f"train.max_steps - optim.warmup_steps = {t.max_steps - o.warmup_steps}], got {o.final_steps}")
    else:
        need(o.final_steps == 0, "optim.final_steps", "is a setting of optim.schedule=step (cosine decays to "
             "optim.min_lr); remove it or set optim.schedule=step")
    need(finite(o.clip_grad) and o.clip_grad >= 0, "optim.clip_grad", f"must be >= 0 (0: off), got {o.clip_grad}")

    a = cfg.image_aug
    for key in ("mix_prob", "switch_prob", "random_erasing", "hflip", "vflip"):
        value = getattr(a, key)
        need(0 <= value <= 1, f"image_aug.{key}", f"is a probability: must be in [0, 1], got {value}")
    need(a.mixup >= 0 and a.cutmix >= 0, "image_aug.mixup", "mixup and cutmix (Beta alphas) must be >= 0")
    need(0 <= a.label_smoothing < 1, "image_aug.label_smoothing", f"must be in [0, 1), got {a.label_smoothing}")
    validate_image_pipeline(a, cfg.renderer.image_size)

    d = cfg.data
    need(d.views_per_class >= 0, "data.views_per_class", f"must be >= 0, got {d.views_per_class}")
    need(d.workers >= 0, "data.workers", f"must be >= 0, got {d.workers}")
    for key in ("views_per_category", "repeated_aug"):
        need(getattr(d, key) >= 1, f"data.{key}", f"must be >= 1, got {getattr(d, key)}")
    group = d.views_per_category * d.repeated_aug
    need(t.batch_size % group == 0, "train.batch_size",
         f"must be a multiple of data.views_per_category x data.repeated_aug = {group} (whole groups per "
         f"micro-batch), got {t.batch_size}")
    if d.views_per_category > 1:
        need(t.batch_size // group <= cfg.bank.num_classes, "data.views_per_category",
             f"a micro-batch of {t.batch_size} holds {t.batch_size // group} distinct categories of "
             f"{d.views_per_category} x {d.repeated_aug} images, more than bank.num_classes={cfg.bank.num_classes}; "
             "lower train.batch_size or raise data.views_per_category")
        need(d.views_per_class == 0 or d.views_per_category <= d.views_per_class, "data.views_per_category",
             f"{d.views_per_category} different view seeds per category need data.views_per_class >= it, got "
             f"{d.views_per_class}")
    if d.source == "static":
        need(bool(d.path), "data.path", "must name a dataset folder when data.source=static")

    family = FAMILIES.get(cfg.bank.family)
    validate_against_bank(cfg.renderer, content_settings(cfg.bank), cfg.bank.num_classes, cfg.bank.num_points,
                          family.colors)
    renderer_mode(cfg).validate(cfg)  # the mode's checks against the data source, the objective, section match
    _validate_sizes(cfg)

    OBJECTIVES.spec(t.objective).validate(cfg)


def validate_image_pipeline(a: ImageAugConfig, image_size: int) -> None:
    """The checks of the pixel operations of ``image_aug`` (crop, contest operations, RandAugment)."""
    need(0 <= a.transpose <= 1, "image_aug.transpose", f"is a probability: must be in [0, 1], got {a.transpose}")
    c = a.random_resized_crop
    need(0 < c.scale[0] <= c.scale[1] <= 1, "image_aug.random_resized_crop.scale",
         f"is a range of area fractions: needs 0 < low <= high <= 1, got {list(c.scale)}")
    need(0 < c.ratio[0] <= c.ratio[1] and all(map(finite, c.ratio)), "image_aug.random_resized_crop.ratio",
         f"is a range of aspect ratios: needs 0 < low <= high, got {list(c.ratio)}")
    limits = {"shift_scale_rotate": ("shift_limit", "scale_limit", "rotate_limit"),
              "brightness_contrast": ("brightness_limit", "contrast_limit"),
              "hue_saturation_value": ("hue_shift_limit", "sat_shift_limit", "val_shift_limit"),
              "distortion": ("optical_distort_limit", "optical_shift_limit", "grid_distort_limit")}
    for section, keys in limits.items():
        settings = getattr(a, section)
        need(0 <= settings.p <= 1, f"image_aug.{section}.p", f"is a probability: must be in [0, 1], got {settings.p}")
        for key in keys:
            value = getattr(settings, key)
            need(finite(value) and value >= 0, f"image_aug.{section}.{key}",
                 f"is the half-width of a symmetric range: must be >= 0, got {value}")
    need(a.shift_scale_rotate.scale_limit < 1, "image_aug.shift_scale_rotate.scale_limit",
         f"scales by 1 + U(-limit, limit): must be < 1, got {a.shift_scale_rotate.scale_limit}")
    need(1 <= a.distortion.grid_steps <= image_size, "image_aug.distortion.grid_steps",
         f"cells per side: must be in [1, renderer.image_size={image_size}], got {a.distortion.grid_steps}")
    if a.randaugment:
        from dr_fdsl.randaugment import parse_randaugment  # imports timm; only when configured

        parse_randaugment(a.randaugment)


def renderer_mode(cfg: Config):
    """The spec (:class:`~dr_fdsl.modes.base_settings.ModeSpec`) of ``renderer.mode``: its checks, size estimates
    and sections, torch-free (a did-you-mean ``ConfigError`` naming the key for an unknown one)."""
    return MODES.spec(cfg.renderer.mode)


def validate_bank(b: BankConfig) -> None:
    """The bank section's checks, the chosen family's included (also run by ``bank_from_config``)."""
    need(b.num_classes >= 1, "bank.num_classes", f"must be positive, got {b.num_classes}")
    need(b.num_points >= 1, "bank.num_points", f"must be positive, got {b.num_points}")
    need(b.seed >= 0, "bank.seed", f"must be >= 0, got {b.seed}")
    FAMILIES.get(b.family).validate(b)


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
    need(not r.tables or r.mode == "frozen", "renderer.tables",
         f"draws a trained run's tables as they are: it needs renderer.mode=frozen, got {r.mode!r} (to train a run "
         "further, resume it: train.py --resume)")
    view, aug = r.view, r.augment
    for key in ("azimuth", "elevation", "roll", "distance", "fov", "ortho_scale"):
        lo, hi = getattr(view, key)
        need(lo <= hi, f"renderer.view.{key}", f"range [{lo}, {hi}] has low > high")
    need(view.distance[0] > 0, "renderer.view.distance", "must be positive (camera to cloud centre)")
    need(view.fov[0] > 0 and view.fov[1] < 180, "renderer.view.fov", "must lie in (0, 180) degrees")
    need(view.ortho_scale[0] > 0, "renderer.view.ortho_scale", "must be positive")
    need(0 < aug.scale[0] <= aug.scale[1], "renderer.augment.scale", f"need 0 < low <= high, got {aug.scale}")
    need(0 < aug.subsample[0] <= aug.subsample[1] <= 1, "renderer.augment.subsample",
         f"need 0 < low <= high <= 1 (fractions of points kept), got {aug.subsample}")
    need(aug.shift >= 0 and aug.jitter >= 0, "renderer.augment.shift", "shift and jitter must be >= 0")
    need(0 <= aug.mix < 1, "renderer.augment.mix",
         f"fraction of points from another category must be in [0, 1), got {aug.mix}")
    need(aug.pointwolf_anchors >= 1 and aug.pointwolf_sigma > 0, "renderer.augment.pointwolf_anchors",
         "need at least one anchor and a positive pointwolf_sigma")
    need(0 < aug.pointwolf_scale[0] <= aug.pointwolf_scale[1], "renderer.augment.pointwolf_scale",
         "need 0 < low <= high")
    for key in ("subsample_prob", "scale_shift_prob", "jitter_prob"):
        value = getattr(aug, key)
        need(0 <= value <= 1, f"renderer.augment.{key}", f"is a probability: must be in [0, 1], got {value}")
    for key in ("drop_local", "add_global", "add_local"):
        need(getattr(aug, key) >= 0, f"renderer.augment.{key}", f"is a number of points: must be >= 0, got "
             f"{getattr(aug, key)}")
    for key in ("depth_hue_saturation", "depth_hue_value"):
        lo, hi = getattr(aug, key)
        need(0 <= lo <= hi <= 1, f"renderer.augment.{key}", f"need 0 <= low <= high <= 1, got {(lo, hi)}")
    need(0 < aug.radius_scale[0] <= aug.radius_scale[1], "renderer.augment.radius_scale",
         f"need 0 < low <= high, got {aug.radius_scale}")
    need(finite(aug.window_scale[1]) and 0 < aug.window_scale[0] <= aug.window_scale[1],
         "renderer.augment.window_scale", f"need 0 < low <= high (published [0.5, 2.0]), got {list(aug.window_scale)}")
    need(finite(aug.window_shift) and aug.window_shift >= 0, "renderer.augment.window_shift",
         f"is a fraction of the window: must be >= 0 (published 0.2), got {aug.window_shift}")
    jitter = aug.map_jitter
    need(finite(jitter[1]) and 0 < jitter[0] <= jitter[1], "renderer.augment.map_jitter",
         f"need 0 < low <= high (published [0.8, 1.1]; [1, 1]: off), got {list(jitter)}")
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


def _validate_bank_size(cfg: Config) -> None:
    """Refuses a bank whose points and rendering tables cannot fit in this machine's memory (before the family's
    own estimates, which :func:`validate_bank` runs)."""
    limit = memory.machine_memory()
    b, r = cfg.bank, cfg.renderer
    # The bank (float32 points) plus colour and radius tables (float32 logits), and SparseAdam's two moments
    # of each when they train.
    tables = b.num_classes * b.num_points * (3 + 3 + 1) * 4 * renderer_mode(cfg).table_copies()
    if tables > limit:
        raise ConfigError(f"config keys 'bank.num_classes' x 'bank.num_points' ({b.num_classes} x {b.num_points}): "
                          f"the bank and its rendering tables need about {gib(tables)}, more than this machine's "
                          f"{gib(limit)}; lower them")
    if r.color_init == "palette":  # drawn for every table at once: float32 colours, an int64 choice per point
        tables = 1 if r.share_colors else b.num_classes
        need_bytes("renderer.palette_size", tables * (r.palette_size * 3 * 4 + b.num_points * 8),
                   f"{tables} palettes of {r.palette_size} colours")


def batch_sizes(cfg: Config) -> list[tuple[str, float, str, str]]:
    """The largest buffers of one training step that live on the training device, estimated from the config:
    ``(key, bytes, what, fix)`` for :func:`~dr_fdsl.memory.need_bytes`. Checked against this machine's memory
    at load and against the GPU's in ``build_run`` (:func:`validate_device`)."""
    r, t = cfg.renderer, cfg.train
    out = [("renderer.image_size",
            t.batch_size * r.image_size**2 * (r.points_per_pixel * _FRAGMENT_BYTES + _PIXEL_BYTES),
            f"{r.image_size} px, batch {t.batch_size}, K={r.points_per_pixel}: one batch's fragments and images",
            "lower renderer.image_size, train.batch_size or renderer.points_per_pixel")]
    # Each image's points after the corruptions, projected and drawn: positions, colours, radii and their copies.
    aug = r.augment
    per_image = max(1, r.objects.max) * (cfg.bank.num_points + aug.add_global + aug.add_local)
    key = "renderer.augment.add_global" if aug.add_global >= aug.add_local else "renderer.augment.add_local"
    out.append((key, t.batch_size * per_image * _POINT_BYTES,
                f"one batch's points ({t.batch_size} images x {per_image} points, added ones included)",
                "lower it (ModelNet-C's levels: 10 to 50 added points globally, 100 to 500 locally)"))
    out.extend(renderer_mode(cfg).buffers(cfg))  # the mode's own (match's random convolutions)
    return out


def _validate_sizes(cfg: Config, device=None) -> None:
    """Refuses sizes of a step that cannot fit in the memory of ``device`` (None: this machine), with the
    estimate (before minutes of work)."""
    for key, nbytes, what, fix in batch_sizes(cfg):
        need_bytes(key, nbytes, what, fix, device)


def validate_device(cfg: Config, device, autocast: bool) -> None:
    """The checks that need the training device (``build_run`` runs them once the ``Accelerator`` exists).

    ``autocast``: whether Accelerate enables mixed precision there (its ``native_amp``). It accepts fp16 on a
    CPU and trains in float32, while config.yaml and the fingerprint would say fp16: refused. bf16 autocasts on a
    CPU (the backbone's layers compute in bfloat16) and is honoured. On a CUDA device the step's size estimates
    are checked against the GPU's memory (at load: against this machine's)."""
    p = cfg.train.mixed_precision
    if p != "no" and not autocast:
        other = "no or bf16" if getattr(device, "type", None) == "cpu" else "no"
        raise ConfigError(f"config key 'train.mixed_precision': {p!r} does not run on {device} (it would train in "
                          f"float32); {p} needs a CUDA GPU, here use train.mixed_precision={other}")
    if getattr(device, "type", None) == "cuda":
        _validate_sizes(cfg, device)

"""One typed configuration: dataclasses are the single source of truth.

Values are resolved in this order (later wins): dataclass defaults, the YAML file given with ``--config``,
then dotted command-line overrides such as ``train.max_steps=100 renderer.mode=joint``. Every key and value is
checked against the dataclasses before any work starts: an unknown key, a wrong type or a value outside a
``Literal`` names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dr_fdsl import memory
from dr_fdsl.errors import ConfigError
from dr_fdsl.memory import gib, need_bytes


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 scalars where 1.1 surprises: only true/false are booleans (1.1 also reads yes/no/on/off,
    which would turn ``mixed_precision: no`` into False), ``1e-3`` is a float (1.1 needs a dot: ``1.0e-3``), and
    a key given twice in one mapping is an error (1.1 silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base": merged keys may be overridden; SafeLoader's construct_mapping merges them
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConfigError(f"a key must be a plain value, got {key!r} (line {key_node.start_mark.line + 1})")
            if key in seen:
                raise ConfigError(f"key {key!r} appears twice in one section (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def _read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


# Keys of earlier versions and where they live now, so that an old config fails with the fix in the message.
MOVED_KEYS = {f"bank.{k}": f"bank.ifs3d.{k}" for k in ("sampler", "min_variance", "min_maps", "max_maps", "burn_in")}

# A field with this metadata does not change what a run generates (points or pixels): optimisation settings,
# cache folders. Every "settings that change the images" list (bank cache key, static dataset check, checkpoint
# fingerprint) is derived from it by :func:`content_settings`.
NOT_CONTENT = {"content": False}
# A content field added after caches, static datasets and checkpoints were made: left out of content_settings while
# it holds its default, so that what was made before it existed keeps its key (its default changes nothing).
ADDED = {"omit_default": True}


# --------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------


@dataclass
class IFS3DConfig:
    """Family ``ifs3d``: one 3D iterated function system per category (3D-OFDB), kept by a variance filter."""

    # "uniform": the 3D-OFDB recipe, 12 parameters per map from U(-1, 1), rejection by variance.
    # "svd": contractive maps A = R1 diag(s) R2 with singular values s in (0, 1) (Anderson & Farrell).
    sampler: Literal["uniform", "svd"] = "uniform"
    min_variance: float = 0.05
    min_maps: int = 2
    max_maps: int = 7
    burn_in: int = 100


@dataclass
class OFDBConfig:
    """Family ``ofdb``: 3D-OFDB's published category search (ryoo-nakamura/OFDB), reproduced bit for bit, or the
    categories of a published parameter file. The search's seed is ``bank.seed`` (42 reproduces the contest's
    published parameter file); clouds are made the published way with ``bank.num_points + 1`` draws (9,999
    points for the published 10,000), min-max scaled to [-1, 1] and then centred."""

    # "search": run the published search. Otherwise the path of a folder of 3D-OFDB CSVs (000000.csv, ...) or of
    # the contest's parameter pickle (point_cloud_*_params.pkl; read with a restricted unpickler that admits
    # numeric arrays only). The cache is keyed by the path: after replacing a file there, rebuild the bank.
    source: str = "search"
    variance: float = 0.05  # per-axis variance the normalised cloud must exceed (3d-ofdb_render.sh's value)
    # Whose np.linalg.det rounding sets the map probabilities (only the last bits of some differ): "mkl"
    # reproduces the contest's file (MKL; also a pip numpy whose OpenBLAS runs its Sandybridge kernels),
    # "openblas" OFDB's script under a pip numpy whose OpenBLAS runs its Haswell, Zen or Nehalem kernels. On
    # AVX-512 CPUs OpenBLAS fuses one multiply-add and neither matches (201 of the 2,375 maps of the seed-42
    # search differ from "openblas"): point `source` at the CSVs written there. See docs/families.md.
    lapack: Literal["mkl", "openblas"] = "mkl"
    # "ofdb": every map's first coefficient scaled by 0.4 before the chaos game, as OFDB's instance.py does for
    # its released models (the first row of its weights_ins145.csv). "none": the searched systems as they are.
    instance_weight: Literal["none", "ofdb"] = "none"
    # "exfractal145": every image is one of 145 instances of its category, drawn from its own key: the maps scaled
    # by a row of weights_ins145.csv and the category's chaos game replayed on the device with the same map choices
    # (dr_fdsl/render/instances.py). "none": the category's cloud itself.
    instances: Literal["none", "exfractal145"] = field(default="none", metadata=ADDED)


@dataclass
class FractalDBConfig:
    """Family ``fractaldb``: FractalDB's published 2D category search (Kataoka et al., ACCV 2020), reproduced bit
    for bit, or the categories of a folder of its published CSVs. The search's seed is ``bank.seed``: the
    published ``ifs_search.py`` seeds with 1, so ``bank.seed=1`` gives the 1,000 shipped FractalDB-1k categories.
    Each category's ``bank.num_points`` points are those the published renderer draws with that many iterations,
    at the pixels of a ``canvas``-pixel image (see :mod:`dr_fdsl.families.fractaldb2d`)."""

    # "search": run the published search. Otherwise a folder of FractalDB CSVs, read in file-name order: the
    # *.csv files in it (make_fractaldb.py's --load_root, e.g. the repository's
    # data/csv_rate0.2_category1000/csv0), or, if it holds none, those of its sub-folders (the repository's
    # data/csv_rate0.2_category1000, split into csv0..csv39). The cache is keyed by the path: after replacing a
    # file there, rebuild the bank.
    source: str = "search"
    rate: float = 0.2  # filling-rate threshold of the search (--rate; accepted when rate >= it)
    search_points: int = 100_000  # chaos-game points per candidate in the search (--numof_point)
    # Side of the published image the points are placed in (make_fractaldb.py --image_size, pad 6): 512 is its
    # default and the search's canvas; exe.sh renders FractalDB-1k at 362.
    canvas: int = 512
    # True: every image is one of the published instances of its category, drawn from its own key: one of the 25
    # rows of weights_0.4.csv (the chaos game replayed on the device with the category's map choices), one of the
    # 4 flips, and the points moved to the centres of the published 3 x 3 patches (dr_fdsl/render/instances.py).
    instances: bool = field(default=False, metadata=ADDED)


@dataclass
class VisualAtomConfig:
    """Family ``visualatom``: the categories of VisualAtom (Takashima et al., CVPR 2023), instance 0 of each, its
    orbits drawn as lines of points on the published canvas (dr_fdsl/families/visualatom2d.py). The knobs are
    render_VisualAtom.py's, named as there (``canvas`` is its ``image_size``); the defaults are make_VisualAtom.sh's."""

    # True: each category's parameters, instance-0 centre, grey levels and orbit vertices exactly as the published
    # run made them (bank category c is the script's category start_class + c, made by process
    # c // (numof_classes / numof_thread) with random.seed(process + 1)); bank.seed is not used. Slow: about 0.5
    # CPU-s per category, because every instance's draws before it in its process must be replayed.
    # False: categories drawn one after another from one fresh stream seeded with bank.seed, instance 0 only
    # (fast; the same distributions, not the published categories).
    replay: bool = False
    # The published run's layout (replay only): how many categories and processes, instances per category.
    numof_classes: int = 1000
    numof_instances: int = 1000
    numof_thread: int = 20
    start_class: int = 0
    canvas: int = 512  # the square canvas in pixels; it spans the renderer's whole image
    vertex_num_min: int = 200  # K, vertices per orbit
    vertex_num_max: int = 1000
    perlin_min: int = 0  # noise amplitude in [perlin_min, perlin_min + 4)
    line_width: float = 0.1  # outward step added to every vertex, in [0, line_width)
    radius_min: int = 10  # base radius in [radius_min, radius_min + 50] canvas pixels
    line_num_min: int = 1  # L, orbits per category
    line_num_max: int = 200
    oval_rate: int = 2  # ellipse aspect factors in [1, oval_rate)
    start_pos: int = 512  # centre = (canvas + randint(-start_pos, start_pos)) / 2 on each axis
    nami_1_min: int = 0  # frequencies of the two sine waves
    nami_2_min: int = 0
    nami_1_max: int = 20
    nami_2_max: int = 20
    # Ours: the polylines are sampled every `spacing` canvas pixels at most (bank.num_points then caps or pads).
    spacing: float = 0.5
    # True: every image draws, from its own key, a centre and a grey level per orbit as the published instances do;
    # the orbits' shapes stay instance 0's. The bank then samples the orbits over every part any centre can bring
    # onto the canvas (dr_fdsl/render/instances.py).
    instances: bool = field(default=False, metadata=ADDED)


@dataclass
class SVD2DConfig:
    """Family ``svd2d``: Anderson & Farrell's single-instance fractals ("Improving Fractal Pre-training", WACV
    2022): 2D maps from SVD factors whose singular values meet the sigma-factor constraint, translations
    U(-bval, bval), the chaos game from the first map's fixed point, each point's grey level the published
    per-pixel point density (dr_fdsl/families/svd2d_family.py). Category c's system is drawn by the ported sampler
    from ``numpy.random.default_rng(bank.seed * 2**32 + c)``."""

    min_maps: int = 2  # ifs.py __main__: --min_n 2, --max_n 4 (both inclusive)
    max_maps: int = 4
    bval: float = 1.0  # translations U(-bval, bval) (--bval)
    # Side of the square image whose per-pixel point counts give each point's grey level (the published
    # IFSGenerator renders at its size, 224; MultiGenerator at size // 2, 112).
    canvas: int = 224


@dataclass
class BankConfig:
    """The bank of point sets: one per category, built by a formula family (``family``, see dr_fdsl/families).

    The settings of the chosen family live in the section named after it (``bank.ifs3d`` for ``ifs3d``); the
    sections of other families are ignored.
    """

    family: str = "ifs3d"
    num_classes: int = 1000
    num_points: int = 10000
    seed: int = 0
    ifs3d: IFS3DConfig = field(default_factory=IFS3DConfig, metadata={"family": True})
    ofdb: OFDBConfig = field(default_factory=OFDBConfig, metadata={"family": True})
    fractaldb: FractalDBConfig = field(default_factory=FractalDBConfig, metadata={"family": True})
    visualatom: VisualAtomConfig = field(default_factory=VisualAtomConfig, metadata={"family": True})
    svd2d: SVD2DConfig = field(default_factory=SVD2DConfig, metadata={"family": True})
    # Where built banks are cached, keyed by the settings above.
    cache_dir: str = field(default="cache/banks", metadata=NOT_CONTENT)


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
    # Family svd2d only (dr_fdsl/render/ifs_jitter.py): one map of the category's system, chosen per image, scaled by
    # U(map_jitter) (published IFSGenerator jitter_params=True: [0.8, 1.1], up to 4 draws until it stays
    # contractive, else unchanged); the points are its chaos game replayed with the jittered maps, in its own window.
    map_jitter: tuple[float, float] = field(default=(1.0, 1.0), metadata=ADDED)
    window_scale: tuple[float, float] = field(default=(1.0, 1.0), metadata=ADDED)
    window_shift: float = field(default=0.0, metadata=ADDED)
    dihedral: bool = field(default=False, metadata=ADDED)


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
class RendererConfig:
    """The differentiable point renderer: learnable per-point colours and radii, PyTorch3D compositing."""

    # Which gradient reaches the rendering tables: one module per mode in dr_fdsl/modes/ (registered in MODES).
    # "match": they descend a distance between rendered and target-domain images (section match, dr_fdsl/match.py).
    mode: Literal["frozen", "joint", "adversarial", "match"] = field(default="frozen", metadata=NOT_CONTENT)
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
    color_param: Literal["squash", "clamp"] = field(default="squash", metadata=ADDED)
    view: ViewConfig = field(default_factory=ViewConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig, metadata=ADDED)
    # Optimisation of the rendering parameters (modes "joint" and "adversarial"): SparseAdam on the logits
    # (lazy: only the rows of the categories a step drew move), warm-up and cosine like the classifier.
    lr: float = field(default=1e-2, metadata=NOT_CONTENT)
    # "adversarial": the renderer ascends the loss through a gradient reversal of this scale, and pays
    # anchor_penalty * mean squared distance of its logits from their initial values.
    adversarial_scale: float = field(default=1.0, metadata=NOT_CONTENT)
    anchor_penalty: float = field(default=1e-2, metadata=NOT_CONTENT)


@dataclass
class ModelConfig:
    """The classifier: any timm model by name, with ``num_classes`` = categories and the renderer's image size."""

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
    clip_grad: float = 1.0  # max global grad norm of classifier and of renderer, each; 0 switches it off


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
    # Grouped draws (dr_fdsl/stream.py): each drawn category appears with this many different view seeds,
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
class MIMConfig:
    """Objective ``mim``: masked-image modelling (Terentiev & Ivanenko's recipe): square pixel patches of side
    ``patch`` are masked with probability ``ratio`` each (drawn from each image's key), a ViT encodes the masked
    image and a linear decoder predicts every pixel; the loss is L1 against the clean image."""

    patch: int = 4  # side of a masked square, pixels (published: 2, 4 or 8; best 4)
    ratio: float = 0.2  # probability that a square is masked (published: 0.2, 0.4, 0.6; best 0.2)
    loss_on: Literal["all", "masked"] = "all"  # published: L1 over all pixels; "masked": over masked ones only
    # classify+mim: loss = classification loss + weight * reconstruction loss (the relative scale of the two
    # gradients; it changes no pixel and no draw of the random stream)
    weight: float = field(default=1.0, metadata=NOT_CONTENT)


@dataclass
class MatchConfig:
    """Renderer mode ``match`` (dr_fdsl/match.py): the rendering parameters minimise ``weight`` x ``distance``
    between statistics of rendered images and of unlabelled training images of a target dataset, while the
    objective trains its networks on the same rendered batch (as in learning to simulate / Meta-Sim)."""

    # Target images: the training split of fashion_mnist, cifar10, cifar100 or folder:PATH (its train/ folder),
    # labels unused, resized to renderer.image_size (bilinear, as fine-tuning resizes). Required in mode match.
    dataset: str = ""
    data_root: str = field(default="data", metadata=NOT_CONTENT)  # where torchvision's copies are (or go)
    images: int = 1000  # how many training images form the target set (a seeded subset; 0: all)
    batch: int = 64  # target images per micro-batch, drawn with replacement from the set (keyed by step)
    # A weighted sum of terms, e.g. "mmd + moments + 0.5*spectrum": mmd (kernel MMD^2 of image features),
    # moments (colour mean and covariance), spectrum (radially averaged log power spectrum).
    distance: str = "mmd + moments + spectrum"
    weight: float = 1.0  # the renderer descends weight x distance
    # True: the renderer also descends the objective's loss (joint + match); false: the objective's loss
    # reaches the networks only (the images are detached for it, as in frozen).
    joint: bool = False
    # mmd: its features ("random": fixed random convolutions; "classifier": the objective's backbone's first
    # classifier_blocks blocks, parameters detached; "both": the two concatenated) and its estimator
    # ("unbiased": Gretton et al.'s U-statistic, zero in expectation for equal distributions; "biased": the
    # V-statistic, exactly zero for identical sets). RBF kernels at 0.25, 1 and 4 x the median heuristic.
    features: Literal["random", "classifier", "both"] = "random"
    estimator: Literal["unbiased", "biased"] = "unbiased"
    random_layers: int = 3  # 3x3 convolutions of stride 2 with ReLU, each layer's channel means are features
    random_channels: int = 16  # channels of the first layer, doubled at each layer
    feature_seed: int = 0  # the random convolutions' weights
    classifier_blocks: int = 1


@dataclass
class SiTConfig:
    """Objective ``sit``: SiT, self-supervised vision transformer (Atito, Awais & Kittler 2021), as its public code
    (Sara-Ahmed/SiT at 1aacd6a, the paper's version) computes it: rotation prediction (4 classes) and a contrastive
    task (NT-Xent) on two tokens of their own, reconstruction of the clean image from a corrupted one by a linear
    pixel decoder (L1), the three losses weighted by learned uncertainties. Defaults are the published values
    (dr_fdsl/objectives/sit.py says where each comes from)."""

    temperature: float = 0.5  # NT-Xent temperature (losses.py ContrastiveLoss)
    projection_dim: int = 512  # contrastive head output (vision_transformer_SiT.py contrastive_head)
    # Colour changes of each view: brightness, contrast and saturation factors in [1 - j, 1 + j], in a random order
    # (torchvision's ColorJitter(0.4, 0.4, 0.4), timm's create_transform default, which SiT's views go through).
    color_jitter: float = 0.4
    max_drop: float = 0.3  # rectangles of noise cover up to this fraction of the pixels (drop_rand_patches)
    max_replace: float = 0.3  # rectangles taken from another image cover up to this fraction
    max_block: float = 0.25  # side of a dropped or replaced rectangle: up to this fraction of the image side
    min_block: float = 0.05  # and at least this fraction ("tolr"; also the smallest grey or blurred rectangle)
    max_kernel: int = 15  # blur: odd kernel sizes 3..max_kernel (smooth_patch)
    max_sigma: float = 5.0  # blur: sigma in [0.1, 0.1 + max_sigma)


@dataclass
class Config:
    """Everything a run needs. ``output_dir`` receives the resolved config, logs and checkpoints."""

    output_dir: str = "runs/default"
    seed: int = 0
    bank: BankConfig = field(default_factory=BankConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    image_aug: ImageAugConfig = field(default_factory=ImageAugConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # A part's own section (metadata used_by: the key that chooses the part, whose value names it, "+"-joined for
    # objectives): left out of a run's saved config.yaml when the part is not chosen (used_settings).
    mim: MIMConfig = field(default_factory=MIMConfig, metadata={"used_by": "train.objective"})  # mim, classify+mim
    match: MatchConfig = field(default_factory=MatchConfig, metadata={"used_by": "renderer.mode"})  # mode match
    sit: SiTConfig = field(default_factory=SiTConfig, metadata={"used_by": "train.objective"})  # objective sit


# --------------------------------------------------------------------------------------------------------
# Building and checking
# --------------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"tuple[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and returns it in that type (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected a list of {len(args)} ({_type_name(tp)}), "
                              f"got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - a dataclass field with an annotation this module does not know
        raise TypeError(f"config key '{key}' has an unsupported annotation {tp!r}")
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a nested mapping, checking every key and type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            if f"{prefix}{key}" in MOVED_KEYS:  # a config (or run folder) from an earlier version
                hint = f" (it moved to '{MOVED_KEYS[prefix + str(key)]}')"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; valid keys"
                              f"{' in ' + repr(prefix.rstrip('.')) if prefix else ''}: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}")
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        if node.get(part) is None:  # absent, or a section left empty in the file
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"config override '{dotted}': '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parses ``key.sub=value`` strings; values are read as YAML (``3`` is an int, ``[1, 2]`` a list)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config override {item!r} must look like 'section.key=value'")
        try:
            value = _read_yaml(raw) if raw != "" else ""
        except (yaml.YAMLError, ConfigError) as err:
            raise ConfigError(f"config override {item!r}: value is not valid YAML ({_one_line(err)})") from err
        parsed.append((key.strip(), value))
    return parsed


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section."""
    out = dict(base)
    for key, value in top.items():
        if value is None and isinstance(out.get(key), dict):
            continue  # a section left empty (all keys commented out) changes nothing
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message (with a caret drawing) as one line: the problem, where, and its context."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return " ".join(str(err).split())
    mark = err.problem_mark
    context = f" ({err.context})" if err.context else ""
    return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}{context}"


def _read_text(path: Path) -> str:
    """A config file's text: UTF-8 (YAML's encoding; a leading byte-order mark is allowed) whatever the locale.

    Raises ``ConfigError`` naming the file for a file that cannot be read or is not UTF-8 (with the line and
    byte of the first undecodable byte), never ``UnicodeDecodeError`` or ``OSError``.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read ({err.strerror or err}); check its permissions") \
            from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"config file '{path}' is not UTF-8 text: byte {data[err.start]:#04x} on line {line} "
                          f"cannot be decoded; save the file as UTF-8") from None


def _read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping, with ``include: other.yaml`` (relative to the file; or a list, merged in order)
    read first and merged under it: shared recipes live in one file and variants state only what differs."""
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a folder, not a YAML file; the shipped ones are in configs/")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; the shipped ones are in configs/")
    if path.resolve() in chain:
        raise ConfigError(f"config file '{path}' includes itself (through {' -> '.join(map(str, chain))})")
    text = _read_text(path)  # its errors name the file already
    try:
        tree = _read_yaml(text)
    except ConfigError as err:
        raise ConfigError(f"config file '{path}': {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {_one_line(err)}") from err
    if tree is None:
        # An empty file would silently run the dataclass defaults (a 1,000-category ViT-Tiny run).
        raise ConfigError(f"config file '{path}' is empty; give at least one section (see configs/)")
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(tree).__name__}")
    include = tree.pop("include", None)
    if include is None:
        return tree
    # One file, or a list merged in order (a recipe, then fragments such as configs/image_aug/contest.yaml).
    files = [include] if isinstance(include, str) else include
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"config file '{path}': 'include' must name a YAML file or a list of them, got "
                          f"{include!r}")
    base: dict = {}
    for name in files:
        base = _merge(base, _read_file(path.parent / name, (*chain, path.resolve())))
    return _merge(base, tree)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type = Config,
                validate: bool = True) -> Any:
    """Defaults, then the YAML file at ``path`` (and what it includes), then dotted ``overrides``; every check
    runs before returning.

    ``cls`` may be another dataclass (e.g. the fine-tuning settings); ``validate`` runs :func:`validate_config`
    on a :class:`Config` and ``cls.validate()`` on any other class that has one.
    """
    tree = _read_file(Path(path)) if path is not None else {}
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    cfg = from_dict(cls, tree)
    if validate:
        if isinstance(cfg, Config):
            validate_config(cfg)
        elif hasattr(cfg, "validate"):
            cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML-friendly types (tuples become lists)."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Writes the resolved config as YAML; ``load_config(path)`` reproduces ``cfg``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(cfg))
    return path


def config_text(cfg: Any) -> str:
    """The resolved config as YAML, as ``save_config`` writes it (and the run's log.txt shows it): for a
    :class:`Config`, only what the run uses (:func:`used_settings`)."""
    return yaml.safe_dump(used_settings(cfg) if isinstance(cfg, Config) else to_dict(cfg), sort_keys=False)


def section_used(cfg: Config, name: str) -> bool:
    """Whether the run uses top-level section ``name``: a part's own section (``used_by`` metadata) only when its
    part is chosen (``mim`` for ``train.objective: classify+mim``); every other section always."""
    f = next(f for f in dataclasses.fields(Config) if f.name == name)
    chooser = f.metadata.get("used_by")
    if chooser is None:
        return True
    part, key = chooser.split(".")
    return name in str(getattr(getattr(cfg, part), key)).split("+")


def used_settings(cfg: Config) -> dict:
    """``to_dict(cfg)`` without what the run does not use: the bank sections of other families and the sections
    of objectives and modes not chosen. Loading it gives ``cfg`` with those at their defaults, which change nothing
    the run does (no fingerprint or cache key reads them)."""
    tree = to_dict(cfg)
    for name in [f.name for f in dataclasses.fields(Config)]:
        if not section_used(cfg, name):
            del tree[name]
    for f in dataclasses.fields(BankConfig):
        if f.metadata.get("family") and f.name != cfg.bank.family:
            del tree["bank"][f.name]
    return tree


def add_config_args(parser) -> None:
    """Adds the shared ``--config FILE`` option and ``key=value`` overrides to an argparse parser. Parse with
    ``parse_intermixed_args``, so that overrides may stand before and after other options (``k=v --resume X k2=v``)."""
    parser.add_argument("--config", type=str, default=None, help="YAML file under configs/")
    parser.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. train.max_steps=100")


# --------------------------------------------------------------------------------------------------------
# What changes the generated images, and every check of a value (run by load_config, before any work)
# --------------------------------------------------------------------------------------------------------


def content_settings(section: Any) -> dict:
    """The fields of a config section that change what is generated (points or pixels), as plain types.

    Fields marked :data:`NOT_CONTENT` are left out; of the bank's family sections only the chosen family's is
    kept. This is the one source for the bank cache key, the static dataset check and the checkpoint fingerprint.
    """
    out = {}
    for f in dataclasses.fields(section):
        if f.metadata.get("content", True) is False:
            continue
        if f.metadata.get("family") and f.name != getattr(section, "family", None):
            continue
        if f.metadata.get("omit_default") and getattr(section, f.name) == _default(f):
            continue
        if "content_as" in f.metadata:  # a choice among exact equivalents: recorded as the one keys always held
            out[f.name] = f.metadata["content_as"]
            continue
        out[f.name] = _plain(getattr(section, f.name))
    return out


def _default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for a ``default_factory`` section)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return content_settings(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def image_settings(cfg: Config) -> dict:
    """Everything a rendered image depends on: the bank's content and the renderer's (as first initialised)."""
    return {"bank": content_settings(cfg.bank), "renderer": content_settings(cfg.renderer)}


# Refuse sizes whose buffers would not fit in memory, with an estimate (bytes per element x count; dr_fdsl/memory.py).
_FRAGMENT_BYTES = 8 + 4 + 4 + 4  # packed index, depth, squared distance, weight per (pixel, slot)
_PIXEL_BYTES = 3 * 4 * 4  # float32 RGB: the image, its augmented copy, and their gradients
_POINT_BYTES = 16 * 4  # float32 per point: position, camera position, NDC, colour, radius and gradients
# The leakage probe's Adam moves each weight by up to lr per step; its inputs are standardised (BatchNorm), so a
# step above 1 moves a logit by more than its useful range: measured, 10 already gives losses of 20-100 at 4
# classes (chance: 1.4), 1e30 losses of 1e30 with finite weights, and its accuracy is then chance.
PROBE_LR_MAX = 1.0


def need(ok: bool, key: str, what: str) -> None:
    """Raises ``ConfigError("config key 'key': what")`` unless ``ok``: the one shape of every config check."""
    if not ok:
        raise ConfigError(f"config key '{key}': {what}")


def finite(value: float) -> bool:
    return math.isfinite(value)


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

    aug = cfg.renderer.augment
    need(aug.drop_local < cfg.bank.num_points, "renderer.augment.drop_local",
         f"{aug.drop_local} points would empty clouds of bank.num_points={cfg.bank.num_points}; use fewer "
         "(ModelNet-C's levels: 100 to 500)")
    validate_instances(content_settings(cfg.bank), cfg.renderer)
    renderer_mode(cfg).validate(cfg)  # the mode's checks against the data source, the objective, section match
    if cfg.renderer.color_init == "bank":
        from dr_fdsl.families import FAMILIES  # families import this module

        need(FAMILIES.get(cfg.bank.family).colors, "renderer.color_init",
             f"'bank' takes each point's colour from the bank, and family {cfg.bank.family!r} stores none; use a "
             "family that does (visualatom) or another color_init")
    jitter = cfg.renderer.augment.map_jitter
    need(finite(jitter[1]) and 0 < jitter[0] <= jitter[1], "renderer.augment.map_jitter",
         f"need 0 < low <= high (published [0.8, 1.1]; [1, 1]: off), got {list(jitter)}")
    need(jitter == (1.0, 1.0) or cfg.bank.family == "svd2d", "renderer.augment.map_jitter",
         f"replays a system's chaos game with one map scaled: only family svd2d stores its maps and their order, "
         f"got bank.family={cfg.bank.family!r}; set it to [1, 1]")
    need(cfg.renderer.objects.max <= cfg.bank.num_classes, "renderer.objects.max",
         f"objects come from distinct categories: needs at most bank.num_classes={cfg.bank.num_classes}, got "
         f"{cfg.renderer.objects.max}")
    _validate_sizes(cfg)

    # The registry is imported here, not at module level, because objectives import this module.
    from dr_fdsl.objectives import OBJECTIVES

    OBJECTIVES.get(t.objective).validate(cfg)


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


def validate_match(cfg: Config) -> None:
    """The match section's checks (renderer.mode=match)."""
    from dr_fdsl.match import parse_distance  # match imports this module

    m = cfg.match
    need(bool(m.dataset.strip()), "match.dataset",
         "renderer.mode=match matches rendered images to a target dataset's training images and none is named; "
         "set match.dataset=fashion_mnist (or cifar10, cifar100, folder:PATH), or choose another renderer.mode")
    need(m.dataset in ("fashion_mnist", "cifar10", "cifar100") or (m.dataset.startswith("folder:")
         and len(m.dataset) > len("folder:")), "match.dataset",
         f"{m.dataset!r} is not fashion_mnist, cifar10, cifar100 or folder:PATH")
    need(m.images >= 0, "match.images", f"must be >= 0 (0: the whole training split), got {m.images}")
    need(m.batch >= 2, "match.batch", f"must be >= 2 (MMD compares pairs within a set), got {m.batch}")
    need(cfg.train.batch_size >= 2, "train.batch_size",
         f"renderer.mode=match compares pairs of rendered images: needs >= 2, got {cfg.train.batch_size}")
    need(finite(m.weight) and m.weight > 0, "match.weight", f"must be a positive number, got {m.weight}")
    parse_distance(m.distance)  # raises ConfigError naming match.distance
    need(m.random_layers >= 1, "match.random_layers", f"must be >= 1, got {m.random_layers}")
    need(m.random_channels >= 1, "match.random_channels", f"must be >= 1, got {m.random_channels}")
    need(m.feature_seed >= 0, "match.feature_seed", f"must be >= 0, got {m.feature_seed}")
    need(m.classifier_blocks >= 1, "match.classifier_blocks", f"must be >= 1, got {m.classifier_blocks}")


def renderer_mode(cfg: Config):
    """The :class:`~dr_fdsl.modes.base.RendererMode` class of ``renderer.mode`` (a did-you-mean ``ConfigError``
    naming the key for an unknown one)."""
    from dr_fdsl.modes import MODES  # the modes import this module

    return MODES.get(cfg.renderer.mode)


def validate_bank(b: BankConfig) -> None:
    """The bank section's checks, the chosen family's included (also run by ``bank_from_config``)."""
    from dr_fdsl.families import FAMILIES  # families import this module

    need(b.num_classes >= 1, "bank.num_classes", f"must be positive, got {b.num_classes}")
    need(b.num_points >= 1, "bank.num_points", f"must be positive, got {b.num_points}")
    need(b.seed >= 0, "bank.seed", f"must be >= 0, got {b.seed}")
    FAMILIES.get(b.family).validate(b)


def instances_on(bank_settings: dict) -> bool:
    """Whether a bank's settings (``content_settings(cfg.bank)`` or ``PointBank.settings``) ask for instances."""
    section = bank_settings.get(bank_settings.get("family"), {})
    return section.get("instances", "none") not in ("none", False)


def validate_instances(bank_settings: dict, r: RendererConfig) -> None:
    """What instances (``bank.<family>.instances``) cannot be combined with (also run by ``PointRenderer``)."""
    if not instances_on(bank_settings):
        return
    family = bank_settings["family"]
    need(r.augment.mix == 0, "renderer.augment.mix",
         f"must be 0 with bank.{family}.instances (a mixed-in point would need the other category's instance, "
         f"which is not drawn); got {r.augment.mix}")
    if family == "ofdb":
        need(bank_settings["ofdb"]["instance_weight"] == "none", "bank.ofdb.instance_weight",
             "must be 'none' with bank.ofdb.instances=exfractal145: its 145 rows include that weight (row 0)")
    if family == "visualatom":
        need(r.color_init != "bank", "renderer.color_init",
             "'bank' starts every point at instance 0's grey level, and bank.visualatom.instances multiplies the "
             "colours by each image's own orbit grey levels: use 'white' (the published greys exactly) or another")


def validate_renderer(r: RendererConfig) -> None:
    """The renderer section's checks (also run by ``PointRenderer`` for configs built in Python)."""
    from dr_fdsl.render.types import MAX_POINTS_PER_PIXEL

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
    CPU (the classifier's layers compute in bfloat16) and is honoured. On a CUDA device the step's size estimates
    are checked against the GPU's memory (at load: against this machine's)."""
    p = cfg.train.mixed_precision
    if p != "no" and not autocast:
        other = "no or bf16" if getattr(device, "type", None) == "cpu" else "no"
        raise ConfigError(f"config key 'train.mixed_precision': {p!r} does not run on {device} (it would train in "
                          f"float32); {p} needs a CUDA GPU, here use train.mixed_precision={other}")
    if getattr(device, "type", None) == "cuda":
        _validate_sizes(cfg, device)

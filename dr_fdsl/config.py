"""One typed configuration: dataclasses are the single source of truth.

Values are resolved in this order (later wins): dataclass defaults, the YAML file given with ``--config``,
then dotted command-line overrides such as ``train.max_steps=100 renderer.mode=joint``. Every key and value is
checked against the dataclasses before any work starts: an unknown key, a wrong type or a value outside a
``Literal`` names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used, with the key at fault and how to fix it."""


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans, which would
    turn ``mixed_precision: no`` into False."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


# --------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------


@dataclass
class BankConfig:
    """The fractal category bank: one 3D iterated function system (IFS) per category."""

    num_classes: int = 1000
    num_points: int = 10000
    seed: int = 0
    # "uniform": the 3D-OFDB recipe, 12 parameters per map from U(-1, 1), rejection by variance.
    # "svd": contractive maps A = R1 diag(s) R2 with singular values s in (0, 1) (Anderson & Farrell).
    sampler: Literal["uniform", "svd"] = "uniform"
    min_variance: float = 0.05
    min_maps: int = 2
    max_maps: int = 7
    burn_in: int = 100
    # Where built banks are cached, keyed by the settings above.
    cache_dir: str = "cache/banks"


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


@dataclass
class RendererConfig:
    """The differentiable point renderer: learnable per-point colours and radii, PyTorch3D compositing."""

    mode: Literal["frozen", "joint", "adversarial"] = "frozen"
    image_size: int = 224
    points_per_pixel: int = 8
    compositor: Literal["alpha", "norm_weighted"] = "alpha"
    # "pytorch3d": rasterize_points (naive kernel on CPU, binned on CUDA). "sort": the same fragments from
    # footprint expansion and a (pixel, depth) sort in tensor ops (dr_fdsl/render/sort_raster.py).
    raster_backend: Literal["pytorch3d", "sort"] = "pytorch3d"
    # Radii are NDC units (the image spans [-1, 1]); kept in [radius_min, radius_max] by a scaled squash (renderer.py).
    radius_init: float = 0.015
    radius_min: float = 0.005
    radius_max: float = 0.05
    # Colours are kept in (0, 1) by an algebraic sigmoid; "palette": each category draws palette_size random colours.
    color_init: Literal["white", "grey", "random", "palette"] = "white"
    palette_size: int = 4
    share_colors: bool = False  # one colour table for all categories instead of one per category
    share_radii: bool = False
    init_seed: int = 0
    # "color": background_color; "random_color": one random colour per image; "noise": uniform noise per
    # pixel in [0, background_noise]. Composited softly through the transmittance.
    background: Literal["color", "random_color", "noise"] = "color"
    background_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background_noise: float = 0.2
    view: ViewConfig = field(default_factory=ViewConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Optimisation of the rendering parameters (modes "joint" and "adversarial"): SparseAdam on the logits
    # (lazy: only the rows of the categories a step drew move), warm-up and cosine like the classifier.
    lr: float = 1e-2
    # "adversarial": the renderer ascends the loss through a gradient reversal of this scale, and pays
    # anchor_penalty * mean squared distance of its logits from their initial values.
    adversarial_scale: float = 1.0
    anchor_penalty: float = 1e-2


@dataclass
class ModelConfig:
    """The classifier: any timm model by name, with ``num_classes`` = categories and the renderer's image size."""

    name: str = "vit_tiny_patch16_224"
    drop_path: float = 0.1


@dataclass
class OptimConfig:
    """Classifier optimisation as in the FDSL recipes: AdamW, lr scaled by total batch / 512, warm-up + cosine."""

    lr: float = 1e-3  # for a total batch of 512; the run uses lr * total_batch / 512
    weight_decay: float = 0.05
    warmup_steps: int = 100  # optimiser steps
    min_lr: float = 1e-6
    clip_grad: float = 1.0  # max global grad norm of classifier and of renderer, each; 0 switches it off


@dataclass
class ImageAugConfig:
    """Image augmentations applied on the device after rendering (timm's Mixup/CutMix and RandomErasing)."""

    mixup: float = 0.8  # Beta(alpha, alpha); 0 switches it off
    cutmix: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    random_erasing: float = 0.25
    hflip: float = 0.5
    vflip: float = 0.0


@dataclass
class DataConfig:
    """Where training images come from: rendered in the step, or read from a dataset written by
    ``tools/render_dataset.py`` (the classic static pipeline). Both feed the same step."""

    source: Literal["render", "static"] = "render"
    path: str = ""  # static: the dataset folder
    # render: 0 draws fresh view seeds in [0, 2^62) every step; V > 0 draws seeds 0..V-1 only, which is the
    # (category, view) universe of a static dataset exported with --views V.
    views_per_class: int = 0
    quantize: bool = False  # round rendered images to 8 bits as PNG files are (straight-through gradients)
    workers: int = 2  # static: data-loader worker processes


@dataclass
class TrainConfig:
    """The step-based loop. Steps are optimiser steps; ``batch_size`` is per process and per micro-batch."""

    max_steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = 10
    eval_every: int = 200
    eval_images: int = 512  # held-out (category, view) pairs with view seeds never drawn in training
    image_every: int = 200  # image grid of fixed (category, view) renders in TensorBoard
    ckpt_every: int = 500
    keep_checkpoints: int = 3
    probe: bool = True  # the colour-statistics leakage probe
    probe_lr: float = 1e-2
    progress: bool = True


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
        child = node.setdefault(part, {})
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
        except yaml.YAMLError as err:
            raise ConfigError(f"config override {item!r}: value is not valid YAML ({err})") from err
        parsed.append((key.strip(), value))
    return parsed


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type = Config) -> Any:
    """Defaults, then the YAML file at ``path``, then dotted ``overrides``; checked before returning."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist; the shipped ones are in configs/")
        try:
            tree = _read_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(tree).__name__}")
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    return from_dict(cls, tree)


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
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def add_config_args(parser) -> None:
    """Adds the shared ``--config FILE`` option and trailing ``key=value`` overrides to an argparse parser."""
    parser.add_argument("--config", type=str, default=None, help="YAML file under configs/")
    parser.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. train.max_steps=100")

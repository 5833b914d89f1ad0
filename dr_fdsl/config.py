"""The run's configuration: ``Config``, composed of the sections of every part, and the checks that relate them.

The loader (YAML, includes, dotted overrides, types, did-you-mean, :func:`need`) is
:mod:`dr_fdsl.settings`, which knows no section. Each part owns its section's dataclass and checks next to its
code, in a module that imports no torch: a family's ``bank.<family>`` in ``dr_fdsl/families/<family>/settings.py``,
an objective's (``mim``, ``sit``) in ``dr_fdsl/objectives/<name>_settings.py``, a renderer mode's (``match``) in
``dr_fdsl/modes/<name>_settings.py``, the renderer's (``renderer`` and its sub-sections, a point operation's
``renderer.augment.<name>``) in ``dr_fdsl/render/settings.py``, the image augmentations' (``image_aug``) in
``dr_fdsl/image_augment_settings.py``. ``BankConfig`` and ``Config`` are composed from the registries
(``FAMILIES``, ``OBJECTIVES``, ``MODES``), in their order; this module holds the sections of the core (model,
optimiser, data, train) and the checks across sections. Loading a config imports neither torch nor timm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
from dr_fdsl.image_augment_settings import (  # noqa: F401  (re-exported, as the renderer's sections below)
    BrightnessContrastConfig,
    DistortionConfig,
    HueSaturationValueConfig,
    ImageAugConfig,
    RandomResizedCropConfig,
    ShiftScaleRotateConfig,
    validate_image_aug,
    validate_image_pipeline,
)
from dr_fdsl.memory import gib, need_bytes
from dr_fdsl.modes import MODES
from dr_fdsl.modes.match_settings import MatchConfig, validate_match  # noqa: F401
from dr_fdsl.objectives import OBJECTIVES
from dr_fdsl.objectives.mim_settings import MIMConfig  # noqa: F401
from dr_fdsl.objectives.sit_settings import SiTConfig  # noqa: F401
from dr_fdsl.render.settings import (  # noqa: F401
    MAX_POINTS_PER_PIXEL,
    AugmentConfig,
    ObjectsConfig,
    PerturbationConfig,
    RendererConfig,
    ViewConfig,
    canonical_tables,
    instances_on,
    table_param,
    validate_against_bank,
    validate_renderer,
)
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

    validate_image_aug(cfg.image_aug, cfg.renderer.image_size)

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

"""Renderer mode ``match``'s settings (section ``match``) and checks, read at load (no torch; the mode is
:mod:`dr_fdsl.modes.match`, the distances :mod:`dr_fdsl.match`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from dr_fdsl.errors import ConfigError
from dr_fdsl.modes.base_settings import ModeSpec, joint_trap, need_target_dataset
from dr_fdsl.settings import NOT_CONTENT, finite, need

if TYPE_CHECKING:
    from dr_fdsl.config import Config

TERMS = ("mmd", "moments", "spectrum")


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


def parse_distance(text: str) -> list[tuple[float, str]]:
    """``"mmd + 0.5*spectrum"`` -> ``[(1.0, "mmd"), (0.5, "spectrum")]``; a ConfigError naming ``match.distance``
    for an unknown term, a repeated one or a coefficient that is not a positive number."""
    terms: list[tuple[float, str]] = []
    for part in text.split("+"):
        coefficient, star, name = part.rpartition("*")
        name = name.strip()
        if name not in TERMS:
            raise ConfigError(f"config key 'match.distance': {part.strip()!r} in {text!r} is not a term; write a sum "
                              f"of terms {', '.join(TERMS)}, each optionally weighted, e.g. 'mmd + 0.5*spectrum'")
        try:
            value = float(coefficient) if star else 1.0
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"config key 'match.distance': the weight of {name!r} must be a positive number, got "
                              f"{coefficient.strip()!r}")
        if name in (n for _, n in terms):
            raise ConfigError(f"config key 'match.distance': {name!r} appears twice in {text!r}; give it once")
        terms.append((value, name))
    return terms


def random_feature_bytes(layers: int, channels: int, image_size: int, images: int) -> int:
    """Bytes that :class:`RandomConvFeatures` needs for ``images`` images of ``image_size`` px: its float32
    weights and each layer's activations, kept for the backward (the convolution's output, its ReLU and the
    squared deviations of the std: three float32 per position).

    Estimated from the config before anything is built (the weights grow as 4^layers: 12 layers of 16 doubling
    channels are 20 GB of weights)."""
    total, width, side = 0, 3, image_size
    for i in range(layers):
        out = channels * 2**i
        side = (side + 1) // 2  # 3x3, stride 2, padding 1
        total += out * width * 9 * 4 + 3 * images * out * side * side * 4
        width = out
    return total


def validate_match(cfg: Config) -> None:
    """The match section's checks (renderer.mode=match)."""
    m = cfg.match
    need(bool(m.dataset.strip()), "match.dataset",
         "renderer.mode=match matches rendered images to a target dataset's training images and none is named; "
         "set match.dataset=fashion_mnist (or cifar10, cifar100, folder:PATH), or choose another renderer.mode")
    need_target_dataset(m.dataset, "match.dataset")
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


class MatchSpec(ModeSpec):
    name = "match"
    sections = {"match": MatchConfig}

    @classmethod
    def objective_sees_renderer(cls, cfg: Config) -> bool:
        return cfg.match.joint  # else the objective gets the images detached

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        validate_match(cfg)
        trap = joint_trap(cfg) if cfg.match.joint else ""
        need(not trap, "match.joint", f"it makes the renderer descend objective {cfg.train.objective}'s loss, which "
             f"the renderer can trivialise (joint rendering {trap}; renderer.mode=joint is refused for it too); set "
             "match.joint=false")

    @classmethod
    def buffers(cls, cfg: Config) -> list[tuple[str, float, str, str]]:
        m, size = cfg.match, cfg.renderer.image_size
        if m.features not in ("random", "both"):
            return []
        return [("match.random_layers", random_feature_bytes(m.random_layers, m.random_channels, size,
                                                             cfg.train.batch_size + m.batch),
                 f"{m.random_layers} random convolution layers from {m.random_channels} channels (doubled at each "
                 f"layer) on {size} px images, their weights and activations",
                 "lower match.random_layers or match.random_channels")]

"""The image augmentations' settings, torch-free: the section ``image_aug`` (:class:`ImageAugConfig`, its
sub-sections) and its checks (:func:`validate_image_aug`). Their code is :mod:`dr_fdsl.image_augment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dr_fdsl.settings import ADDED, finite, need


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


def validate_image_aug(a: ImageAugConfig, image_size: int) -> None:
    """Every check of ``image_aug`` (``image_size``: ``renderer.image_size``, which bounds the distortion's grid)."""
    for key in ("mix_prob", "switch_prob", "random_erasing", "hflip", "vflip"):
        value = getattr(a, key)
        need(0 <= value <= 1, f"image_aug.{key}", f"is a probability: must be in [0, 1], got {value}")
    need(a.mixup >= 0 and a.cutmix >= 0, "image_aug.mixup", "mixup and cutmix (Beta alphas) must be >= 0")
    need(0 <= a.label_smoothing < 1, "image_aug.label_smoothing", f"must be in [0, 1), got {a.label_smoothing}")
    validate_image_pipeline(a, image_size)


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

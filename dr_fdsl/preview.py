"""What the network sees, for tools/preview.py: a trained run's learnt renderer, and images through the configured
image augmentations."""

from __future__ import annotations

from pathlib import Path

import torch

from dr_fdsl.bank import bank_from_config
from dr_fdsl.config import Config
from dr_fdsl.errors import ConfigError
from dr_fdsl.render import PointRenderer
from dr_fdsl.tables import build_renderer, run_config, tables_digest


def run_renderer(run: str, overrides: list[str] = ()) -> tuple[Config, PointRenderer, Path]:
    """The renderer of a pre-training run (its ``output_dir`` or one checkpoint folder) as its checkpoint left it:
    the run's frozen equivalent (:func:`~dr_fdsl.tables.run_config`: its own config, ``overrides`` on top, with the
    learnt colour and radius tables of a learnable mode's checkpoint; a frozen run's are rebuilt from the config,
    as training does). Returns the config, the renderer and the checkpoint folder used.

    Raises:
        ConfigError: no such run or checkpoint.
        IntegrityError: the tables' file does not match the checkpoint's manifest or the renderer's shapes.
    """
    cfg, folder = run_config(run, overrides)
    if cfg.renderer.tables:  # checked before the bank is built
        tables_digest(cfg.renderer.tables)
    renderer = build_renderer(cfg, bank_from_config(cfg.bank, progress=True))
    return cfg, renderer.requires_grad_(False), folder


def augmented(images: torch.Tensor, class_ids: torch.Tensor, cfg: Config, num_classes: int) -> torch.Tensor:
    """``images (B, 3, H, W)`` in [0, 1] through the objective's image augmentations as configured (``image_aug``:
    pixel pipeline, flips, erasing, Mixup/CutMix), back in [0, 1] for a look; drawn from torch's global generator.

    Raises:
        ConfigError: Mixup/CutMix with an odd number of images (they pair images).
    """
    from dr_fdsl.image_augment import ImageAugment
    from dr_fdsl.models import create_classifier, normalization

    mean, std = normalization(create_classifier(cfg.model, num_classes, cfg.renderer.image_size))
    augment = ImageAugment(cfg.image_aug, num_classes, images.device, mean, std)
    if augment.mixup is not None and len(images) % 2:
        raise ConfigError(f"--augmented: Mixup/CutMix pair images and the grid holds {len(images)}; give an even "
                          "--classes x --views, or image_aug.mix_prob=0")
    with torch.no_grad():
        normalised, _ = augment(images, class_ids)
    return (normalised * augment.std + augment.mean).clamp(0, 1)

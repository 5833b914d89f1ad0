"""Image augmentations on the device, after rendering: flips, random erasing, Mixup/CutMix with soft targets."""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from dr_fdsl.config import ImageAugConfig


class ImageAugment(nn.Module):
    """Batched image augmentations and the matching loss.

    Randomness comes from torch's and numpy's global generators (timm's Mixup and RandomErasing use them), which
    Accelerate saves per process in every checkpoint, so resumed runs draw the same augmentations.
    """

    def __init__(self, cfg: ImageAugConfig, num_classes: int, device: torch.device):
        super().__init__()
        self.cfg = cfg
        use_mix = cfg.mix_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0)
        self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                           switch_prob=cfg.switch_prob, label_smoothing=cfg.label_smoothing,
                           num_classes=num_classes) if use_mix else None
        self.erase = RandomErasing(probability=cfg.random_erasing, mode="pixel", device=str(device)) \
            if cfg.random_erasing > 0 else None
        self.train_loss = SoftTargetCrossEntropy() if use_mix else LabelSmoothingCrossEntropy(cfg.label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 3, H, W)`` normalised, ``labels (B,)`` -> augmented images and targets (soft ``(B, C)``
        under Mixup/CutMix, else the labels)."""
        b = images.shape[0]
        for prob, dim in ((self.cfg.hflip, 3), (self.cfg.vflip, 2)):
            if prob > 0:
                flip = (torch.rand(b, device=images.device) < prob).view(b, 1, 1, 1)
                images = torch.where(flip, images.flip(dim), images)
        if self.erase is not None:
            images = self.erase(images.clone())
        if self.mixup is not None:
            if b % 2:
                raise ValueError(f"Mixup/CutMix needs an even batch, got {b}: set train.batch_size to an even "
                                 "number or image_aug.mix_prob=0")
            images, targets = self.mixup(images, labels)
            return images, targets
        return images, labels

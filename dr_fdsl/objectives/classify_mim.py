"""Objective ``classify+mim``: classification and masked-image modelling on one backbone.

One ViT, two heads: its classifier head names each image's category (as ``classify``, with all of ``image_aug`` and
the leakage probe), and the pixel decoder of ``mim`` reconstructs the image from a masked copy (squares of
``mim.patch`` pixels at ratio ``mim.ratio``, keyed per image). The loss is ``classification + mim.weight *
reconstruction``. Each step runs the backbone twice, inside one module forward (so DDP and autocast cover both):
once on the augmented images for the head, once on the masked images for the decoder.

Two decisions, enforced (tests/test_objectives.py):

* **Image augmentations feed the classification branch only.** The reconstruction branch masks and reconstructs
  the rendered image itself: a mask is keyed by (category, view seed), and a Mixup/CutMix image belongs to two
  keys and has no clean target of its own. So ``train/mim_loss`` does not depend on ``image_aug``.
* **The renderer sees only the classification gradient.** The reconstruction branch receives the images detached:
  under ``joint`` and ``adversarial`` the renderer's gradient is exactly the one ``classify`` gives it with the
  same weights and augmentations. Descending (joint) a reconstruction loss could empty the image (why ``mim``
  refuses joint); this way joint and adversarial mean what they mean for ``classify``, and the leakage probe
  watches the same trap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dr_fdsl.config import Config
from dr_fdsl.objectives.base import ObjectiveOutput
from dr_fdsl.objectives.classify import Classify
from dr_fdsl.objectives.classify_mim_settings import ClassifyMIMSpec
from dr_fdsl.objectives.mim import (
    MaskedAutoencoder,
    check_backbone,
    mean_l1,
    pixel_mask,
    reconstruction_grids,
)
from dr_fdsl.optim import create_optimizer


class ClassifyingAutoencoder(MaskedAutoencoder):
    """The backbone with its classifier head, and the pixel decoder: weights saved under ``backbone.`` (head
    included) and ``decoder.``; :func:`dr_fdsl.finetune.load_pretrained` reads the backbone with its head."""

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone, keep_head=True)

    def forward(self, images: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``images`` and ``masked`` ``(B, 3, H, W)`` -> logits ``(B, C)`` of ``images`` and the
        reconstruction ``(B, 3, H, W)`` float32 of ``masked``."""
        return self.backbone(images), self.reconstruct(masked)


class ClassifyMIM(ClassifyMIMSpec, Classify):
    # val/loss is classification + mim.weight * reconstruction, as train/loss; the probe's columns come last (they
    # are absent when train.probe is off)
    eval_names = ("val/loss", "val/top1", "val/top5", "val/classify_loss", "val/mim_loss", "val/identity_loss",
                  "probe/val_acc", "probe/color_val_acc", "probe/size_val_acc")

    def __init__(self, cfg: Config, num_classes: int, lr: float, device: torch.device):
        """``lr``: the networks' peak learning rate (the engine scales ``optim.lr`` by the total batch)."""
        super().__init__(cfg, num_classes, lr, device)  # classify's backbone (drawn first), probe, augmentations
        check_backbone(self.model, cfg.model.name, self.name)
        self.model = ClassifyingAutoencoder(self.model)  # prepared first: model.safetensors holds backbone.*, decoder.*
        self.plain = self.model  # never DDP-wrapped: for the image grids of the main process alone
        self.optimizer = create_optimizer(self.model, cfg.optim, lr)  # over the backbone and the decoder

    def _masked(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor):
        """The reconstruction branch's input: clean normalised images of the detached renders, the keyed mask and
        the masked images."""
        clean = self.normalize(images.detach())  # no reconstruction gradient reaches the renderer
        mask = pixel_mask(class_ids, view_seeds, clean.shape[-1], self.cfg.mim.patch, self.cfg.mim.ratio)
        return clean, mask, clean.masked_fill(mask, 0.0)

    def loss(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> ObjectiveOutput:
        x, targets = self.augment(images, class_ids)  # first, so that classify's draws are the same
        clean, mask, masked = self._masked(images, class_ids, view_seeds)
        logits, reconstruction = self.model(x, masked)
        classify_loss = self.augment.train_loss(logits.float(), targets)
        loss_on = self.cfg.mim.loss_on
        mim_loss = mean_l1((reconstruction - clean).abs(), mask, loss_on).mean()
        loss = classify_loss + self.cfg.mim.weight * mim_loss
        metrics = {"train/loss": loss.detach(), "train/classify_loss": classify_loss.detach(),
                   "train/acc": (logits.argmax(1) == class_ids).float().mean().detach(),
                   "train/mim_loss": mim_loss.detach(),
                   "train/identity_loss": mean_l1((masked - clean).abs(), mask, loss_on).mean().detach(),
                   "train/masked_fraction": mask.float().mean().detach()}
        return ObjectiveOutput(loss, loss + self.probe_loss(images, class_ids, metrics), metrics)

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        clean, mask, masked = self._masked(images, class_ids, view_seeds)
        logits, reconstruction = self.model(clean, masked)
        logits = logits.float()
        classify_loss = F.cross_entropy(logits, class_ids, reduction="none")
        loss_on = self.cfg.mim.loss_on
        mim_loss = mean_l1((reconstruction - clean).abs(), mask, loss_on)
        top5 = logits.topk(min(5, self.num_classes), dim=1).indices
        rows = [classify_loss + self.cfg.mim.weight * mim_loss, (top5[:, 0] == class_ids).float(),
                (top5 == class_ids[:, None]).any(1).float(), classify_loss, mim_loss,
                mean_l1((masked - clean).abs(), mask, loss_on)]
        if self.probe is not None:
            rows.extend(self.probe_accuracy(images, class_ids))
        return torch.stack(rows, 1)

    @torch.no_grad()
    def image_grids(self, images: torch.Tensor, class_ids: torch.Tensor,
                    view_seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked, reconstructed and clean images (``mim/masked``, ``mim/reconstructed``, ``mim/clean``)."""
        clean, mask, _ = self._masked(images, class_ids, view_seeds)
        return reconstruction_grids(self.plain, clean, mask, self.mean, self.std)

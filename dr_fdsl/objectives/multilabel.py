"""Objective ``multilabel``: name every category in a multi-instance image (Anderson & Farrell's multi-label
pre-training, ``fractal_learning/training/model/multilabel.py``).

The targets are multi-hot: 1 for each category whose object the image holds, derived from ``(class id, view
seed)`` by the same pure function the renderer draws the objects with (:func:`dr_fdsl.render.multi.targets`; with
``renderer.objects.max: 0`` an image's only label is its own category). The loss is the published one: binary
cross-entropy with logits averaged over images and categories, each image's positives weighted by
``C / (its number of labels)`` (``pos_weight``), so that an image's positive terms weigh as much in total as its
``C`` negatives' would at weight 1 each.

Metrics (``train/`` on each batch, ``val/`` on the held-out views): mean average precision over the categories that
have at least one positive (``mAP``), ``top1`` (the highest-scoring category is in the image: precision at 1) and
``top5`` (the fraction of the image's categories among its 5 highest scores: recall at 5; an image holds at most
``renderer.objects.max`` categories). Mixup/CutMix and label smoothing (single-label image augmentations) are
refused; the other image augmentations of ``image_aug`` apply. The published run logs accuracy and F1 instead
(torchmetrics at threshold 0.5); there is no leakage probe here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dr_fdsl.config import Config
from dr_fdsl.image_augment import ImageAugment
from dr_fdsl.models import create_classifier
from dr_fdsl.objectives.base import Objective, ObjectiveOutput
from dr_fdsl.objectives.multilabel_settings import MultiLabelSpec
from dr_fdsl.optim import create_optimizer
from dr_fdsl.render.multi import targets as multi_hot


def positive_weight(targets: torch.Tensor) -> torch.Tensor:
    """The published ``pos_weight``: ``(B, C)``, every entry of row ``b`` equal to ``C / max(1, labels of b)``."""
    count = targets.count_nonzero(dim=1).clamp_min(1)
    return (targets.shape[1] / count).to(targets.dtype)[:, None].expand_as(targets)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-category average precision ``(C,)`` over ``M`` images (``scores``, ``targets`` ``(M, C)``), NaN for a
    category with no positive: the mean over its positives of the precision among the images ranked at or above
    them (ranked by score, descending; ties in the order of a stable sort)."""
    order = torch.sort(scores.float(), dim=0, descending=True, stable=True).indices
    hits = torch.gather(targets.float(), 0, order)
    rank = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float32)[:, None]
    precision = hits.cumsum(0) / rank
    positives = hits.sum(0)
    return torch.where(positives > 0, (precision * hits).sum(0) / positives.clamp_min(1), torch.nan)


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`average_precision` over the categories that have a positive (a scalar tensor)."""
    return average_precision(scores, targets).nanmean()


def top_k(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``(B,)`` each: precision at 1, and recall at 5 (the image's labels among its 5 highest scores)."""
    best = scores.topk(min(5, scores.shape[1]), dim=1).indices
    found = torch.gather(targets, 1, best)
    return found[:, 0], found.sum(1) / targets.sum(1).clamp_min(1)


class MultiLabel(MultiLabelSpec, Objective):
    eval_names = ("val/loss", "val/top1", "val/top5", "val/mAP")

    def __init__(self, cfg: Config, num_classes: int, lr: float, device: torch.device):
        self.cfg, self.num_classes = cfg, num_classes
        self.model = create_classifier(cfg.model, num_classes, cfg.renderer.image_size)
        self.set_normalization(self.model, device)
        self.optimizer = create_optimizer(self.model, cfg.optim, lr)
        # image_aug's pixel operations, flips and erasing (Mixup/CutMix are refused by validate), then normalisation
        self.augment = ImageAugment(cfg.image_aug, num_classes, device, self.mean, self.std)

    def targets(self, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        """Multi-hot ``(B, C)`` float32 on the images' device."""
        return multi_hot(class_ids, view_seeds.to(class_ids.device), self.num_classes, self.cfg.renderer.objects)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=positive_weight(targets),
                                                  reduction=reduction)

    def loss(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> ObjectiveOutput:
        x, _ = self.augment(images, class_ids)  # pixel operations, then normalisation
        logits = self.model(x).float()
        targets = self.targets(class_ids, view_seeds)
        loss = self._loss(logits, targets)
        top1, top5 = top_k(logits.detach(), targets)
        metrics = {"train/loss": loss.detach(), "train/top1": top1.mean(), "train/top5": top5.mean(),
                   "train/mAP": mean_average_precision(logits.detach(), targets),
                   "train/labels": targets.sum(1).mean()}
        return ObjectiveOutput(loss, loss, metrics)

    def clip_gradients(self, max_norm: float) -> dict[str, torch.Tensor]:
        return {"grad_norm/backbone": torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)}

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        """Per image: loss, top1, top5, then its ``C`` scores and ``C`` targets (for :meth:`summarize`'s mAP)."""
        logits = self.model(self.normalize(images)).float()
        targets = self.targets(class_ids, view_seeds)
        loss = self._loss(logits, targets, reduction="none").mean(1)
        top1, top5 = top_k(logits, targets)
        return torch.cat([torch.stack([loss, top1, top5], 1), logits, targets], 1)

    def summarize(self, values: torch.Tensor) -> dict[str, float]:
        c = self.num_classes
        means = values[:, :3].mean(0).tolist()
        scores, targets = values[:, 3:3 + c], values[:, 3 + c:]
        return {**dict(zip(self.eval_names[:3], means)), "val/mAP": float(mean_average_precision(scores, targets))}

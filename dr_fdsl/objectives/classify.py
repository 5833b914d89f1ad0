"""Objective ``classify``: name each image's category (the FDSL recipes' supervised pre-training).

The image augmentations (``image_aug``: the published pixel pipelines, flips, random erasing, Mixup/CutMix, label
smoothing) run on the device. The leakage probe (a linear classifier on colour statistics, :mod:`dr_fdsl.probe`)
trains beside it on detached statistics, so it never shapes the renderer; its accuracy tells whether learnt
rendering leaks the label through colour or size (its colour-only and size-only heads: through which). With
``renderer.leak_penalty`` the renderer also descends that scale x the probe's cross-entropy against uniform
predictions (:class:`dr_fdsl.probe.LeakageProbe`), paying for what the probe can read; with
``renderer.leak_form=moments``, that scale x the between-category share of the statistics' variance
(:func:`dr_fdsl.probe.between_category_share`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from accelerate import PartialState

from dr_fdsl.config import Config
from dr_fdsl.image_augment import ImageAugment
from dr_fdsl.models import create_classifier
from dr_fdsl.objectives.base import Objective, ObjectiveOutput
from dr_fdsl.objectives.classify_settings import ClassifySpec
from dr_fdsl.optim import create_optimizer
from dr_fdsl.probe import HEADS, LeakageProbe, between_category_share, colour_statistics, restart_, weights_finite


class Classify(ClassifySpec, Objective):
    eval_names = ("val/loss", "val/top1", "val/top5", "probe/val_acc", "probe/color_val_acc", "probe/size_val_acc")

    def __init__(self, cfg: Config, num_classes: int, lr: float, device: torch.device):
        """``lr``: the backbone's peak learning rate (the engine scales ``optim.lr`` by the total batch)."""
        self.cfg, self.num_classes = cfg, num_classes
        self.model = create_classifier(cfg.model, num_classes, cfg.renderer.image_size)
        self.set_normalization(self.model, device)
        self.optimizer = create_optimizer(self.model, cfg.optim, lr)
        self.probe = self.probe_optimizer = None
        self.probe_diverged = False  # set for good by the first non-finite probe loss or weight
        self.restart_probe = False  # its weights were not finite: zero them before its next forward
        if cfg.train.probe:
            self.probe = LeakageProbe(num_classes)
            self.probe_optimizer = torch.optim.Adam(self.probe.parameters(), lr=cfg.train.probe_lr)
        self.background = cfg.renderer.background_color[0]
        self.augment = ImageAugment(cfg.image_aug, num_classes, device, self.mean, self.std)

    def prepare(self, accelerator) -> None:
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        if self.probe is not None:
            self.probe, self.probe_optimizer = accelerator.prepare(self.probe, self.probe_optimizer)

    def unwrap(self, accelerator) -> None:
        self.model = accelerator.unwrap_model(self.model)
        if self.probe is not None:
            self.probe = accelerator.unwrap_model(self.probe)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.probe) if m is not None]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.optimizer, self.probe_optimizer) if o is not None]

    def loss(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> ObjectiveOutput:
        x, targets = self.augment(images, class_ids)  # pixel operations, then normalisation
        logits = self.model(x)
        loss = self.augment.train_loss(logits.float(), targets)
        metrics = {"train/loss": loss.detach(), "train/acc": (logits.argmax(1) == class_ids).float().mean().detach()}
        return ObjectiveOutput(loss, loss + self.probe_loss(images, class_ids, metrics), metrics)

    def probe_loss(self, images: torch.Tensor, class_ids: torch.Tensor, metrics: dict) -> torch.Tensor | float:
        """The leakage probe's loss (0 without a probe; the sum of its three heads'), adding to ``metrics`` its loss,
        each head's accuracy and ``probe/diverged``: a separate graph on detached statistics, so it never shapes the
        renderer, unless ``renderer.leak_penalty`` > 0: then the images also get the gradient of that scale x the whole
        probe's cross-entropy against uniform predictions, its weights held fixed (the probe itself still descends
        its own loss on detached statistics); with ``renderer.leak_form=moments``, of that scale x
        :func:`between_category_share` of the statistics (no probe weight in it).

        A probe whose weights or loss are not finite has diverged: from then on ``probe/diverged`` is 1 and its
        accuracies are NaN (chance is not a finding), a one-line warning says so, and training goes on: the
        step's probe loss is replaced by a zero with zero gradients (every process still runs the probe's backward,
        as DDP needs), and non-finite weights restart from zero before the next forward (a checkpoint holds finite
        weights only). ``train.probe_lr`` is bounded at load (``PROBE_LR_MAX``): larger steps diverge with finite
        but meaningless weights, which no finiteness test sees."""
        if self.probe is None:
            return 0.0
        if self.restart_probe:  # before the forward: the weights may not change under a graph that uses them
            restart_(self.probe, self.probe_optimizer)
            self.restart_probe = False
        penalty = self.cfg.renderer.leak_penalty
        features = colour_statistics(images, self.background, differentiable=penalty > 0)
        if self.cfg.renderer.leak_form == "moments":
            *heads, _ = self.probe(features.detach())
            leak = penalty * between_category_share(features, class_ids) if penalty > 0 else heads[0].new_zeros(())
        else:
            *heads, leak = self.probe(features, penalty)
        losses = [F.cross_entropy(logits.float(), class_ids) for logits in heads]
        loss = sum(losses) + leak
        weights_ok = weights_finite(self.probe)
        if not (weights_ok & torch.isfinite(loss)).item():  # one host sync for both
            self.restart_probe = not weights_ok.item()
            self._probe_diverged("its weights are not finite" if self.restart_probe else f"its loss is {loss.item()}")
            loss = sum((t * 0).nan_to_num(0.0).sum() for t in (*heads, leak))  # zero, with zero gradients
        metrics["probe/loss"] = losses[0].detach() if not self.probe_diverged else torch.tensor(math.nan)
        metrics["probe/diverged"] = torch.tensor(float(self.probe_diverged))
        for head, logits in zip(HEADS, heads):
            accuracy = (logits.argmax(1) == class_ids).float().mean().detach()
            metrics[f"probe/{head}train_acc"] = accuracy if not self.probe_diverged else torch.tensor(math.nan)
        return loss

    def before_checkpoint(self) -> None:
        """A probe whose last step left non-finite weights restarts now rather than at its next forward (the same
        weights either way), so the checkpoint holds finite ones and the run goes on."""
        if self.probe is not None and (self.restart_probe or not weights_finite(self.probe).item()):
            self._probe_diverged("its weights are not finite")
            restart_(self.probe, self.probe_optimizer)
            self.restart_probe = False

    def trainer_state(self) -> dict:
        return {"probe_diverged": True} if self.probe_diverged else {}  # none while it has not: old states match

    def load_trainer_state(self, state: dict) -> None:
        self.probe_diverged = bool(state.get("probe_diverged", False))

    def _probe_diverged(self, why: str) -> None:
        if not self.probe_diverged:
            PartialState().print(f"warning: the leakage probe diverged ({why}); from here on probe/diverged is 1 and "
                                 f"its accuracies are NaN, training goes on; lower train.probe_lr "
                                 f"(now {self.cfg.train.probe_lr})")
        self.probe_diverged = True

    def probe_accuracy(self, images: torch.Tensor, class_ids: torch.Tensor) -> list[torch.Tensor]:
        """The probe's evaluation columns ``(B,)`` each, for the whole probe, its colour head and its size head: 1
        where it names the category, NaN for every image once it diverged."""
        *heads, _ = self.probe(colour_statistics(images, self.background))
        hits = [(logits.argmax(1) == class_ids).float() for logits in heads]
        return [h.fill_(math.nan) for h in hits] if self.probe_diverged else hits

    def clip_gradients(self, max_norm: float) -> dict[str, torch.Tensor]:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        return {"grad_norm/backbone": norm}

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.normalize(images)).float()
        loss = F.cross_entropy(logits, class_ids, reduction="none")
        top5 = logits.topk(min(5, self.num_classes), dim=1).indices
        rows = [loss, (top5[:, 0] == class_ids).float(), (top5 == class_ids[:, None]).any(1).float()]
        if self.probe is not None:
            rows.extend(self.probe_accuracy(images, class_ids))
        return torch.stack(rows, 1)

"""Masked pre-training on the target data itself, before fine-tuning (Terentiev & Ivanenko's setting).

The fine-tuning dataset's training images (those fine-tuning will use: ``per_class`` limits both), without their
labels, train the backbone with the objective ``mim``'s own pieces (:mod:`dr_fdsl.objectives.mim`: the keyed
square mask, the backbone + linear pixel decoder, the L1 loss over all or masked pixels); the decoder is then
dropped and fine-tuning (or a frozen-feature protocol) starts from the backbone. It runs after loading a
pre-trained backbone (``pretrained=RUN``), so fractal pre-training, masked pre-training on the target and
fine-tuning chain in one command.

A real image has no (category, view seed): its mask is keyed by (its index in the training set, the epoch), so
every epoch masks each image afresh, the same way in every run and on any number of processes. The phase draws
its other randomness (decoder initialisation, data order) from a forked generator: the fine-tuning that follows
starts from the same head initialisation, data order and flips as without it, so per seed two arms differ only
in the backbone's weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from dr_fdsl.config import OptimConfig, finite, need
from dr_fdsl.errors import NonFiniteLossError
from dr_fdsl.frozen_eval import model_input
from dr_fdsl.objectives.mim import MaskedAutoencoder, check_backbone, mask_and_reconstruct, mean_l1, pixel_mask
from dr_fdsl.optim import create_optimizer, create_scheduler
from dr_fdsl.textlog import Progress, say


@dataclass
class TargetMIMSettings:
    """Section ``target_mim`` of the fine-tuning settings. ``epochs: 0`` (the default) switches the phase off.
    The other defaults are the seed's recipe: squares of 4 x 4 px masked at 20%, L1 over all pixels, Adam
    (0.9, 0.99) without weight decay, batch 128, lr warmed up from 1e-9 to 1e-4 over 5 epochs, then constant, the
    last 15 of 50 epochs at 5e-5. Learning rates are used as given (not scaled by the batch)."""

    epochs: int = 0
    batch_size: int = 128  # per process
    patch: int = 4  # side of a masked square in the model's input pixels (the images resized to its size)
    ratio: float = 0.2
    loss_on: Literal["all", "masked"] = "all"
    optimizer: Literal["adamw", "adam", "sgd"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_epochs: int = 5
    warmup_lr_init: float = 1e-9
    final_epochs: int = 15  # the last epochs, at final_lr
    final_lr: float = 5e-5

    def validate(self) -> None:
        """Checks every value before any work (the patch against the image size: :func:`masked_pretrain`)."""
        k = "target_mim."
        for key in ("epochs", "warmup_epochs", "final_epochs"):
            need(getattr(self, key) >= 0, k + key, f"must be >= 0, got {getattr(self, key)}")
        if self.epochs == 0:
            return
        need(self.warmup_epochs + self.final_epochs <= self.epochs, k + "final_epochs",
             f"warmup_epochs + final_epochs must fit in epochs={self.epochs}, got {self.warmup_epochs} + "
             f"{self.final_epochs}")
        need(self.batch_size >= 1, k + "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.patch >= 1, k + "patch", f"must be >= 1, got {self.patch}")
        need(0 < self.ratio < 1, k + "ratio", f"is a probability of masking a square: must be in (0, 1), got "
             f"{self.ratio}")
        need(finite(self.lr) and self.lr > 0, k + "lr", f"must be a positive number, got {self.lr}")
        need(finite(self.final_lr) and 0 <= self.final_lr <= self.lr, k + "final_lr",
             f"must be in [0, target_mim.lr], got {self.final_lr}")
        need(finite(self.warmup_lr_init) and 0 <= self.warmup_lr_init <= self.lr, k + "warmup_lr_init",
             f"must be in [0, target_mim.lr], got {self.warmup_lr_init}")
        need(all(finite(b) and 0 <= b < 1 for b in self.betas), k + "betas", "must be two numbers in [0, 1)")
        need(finite(self.weight_decay) and self.weight_decay >= 0, k + "weight_decay", "must be >= 0")

    def optim(self, steps_per_epoch: int) -> OptimConfig:
        """The recipe as the objectives' optimiser settings, epochs counted in optimiser steps."""
        return OptimConfig(name=self.optimizer, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                           warmup_steps=self.warmup_epochs * steps_per_epoch, warmup_lr_init=self.warmup_lr_init,
                           schedule="step", final_steps=self.final_epochs * steps_per_epoch, final_lr=self.final_lr)


def masked_pretrain(backbone: torch.nn.Module, images: torch.Tensor, size: int, mean: torch.Tensor,
                    std: torch.Tensor, s: TargetMIMSettings, seed: int, accelerator, progress: bool = False) -> dict:
    """Trains ``backbone`` in place (its classifier head is removed) by masked-image modelling on ``images``.

    Args:
        backbone: a ViT-like timm model (patch tokens), on the CPU or ``accelerator.device``.
        images: the training images, ``(N, 3, h, w)`` uint8, resized to ``size`` px as fine-tuning resizes them.
        mean, std: the model's input normalisation, ``(1, 3, 1, 1)`` on ``accelerator.device``.
        s: the settings; ``seed`` seeds the forked generator and the data order.
        accelerator: the fine-tuning's ``Accelerator`` (its trackers get ``target_mim/loss`` per epoch).

    Returns:
        ``{"epochs", "steps", "loss", "identity_loss", "masked_loss", "seconds"}``: per epoch, the mean L1 (as
        ``s.loss_on`` defines it) of the reconstruction and of the masked image itself, and the reconstruction's
        L1 over the masked pixels alone (whatever ``s.loss_on``: comparable across ratios).
    """
    check_backbone(backbone, type(backbone).__name__, "target_mim", key="model")
    need(size % s.patch == 0, "target_mim.patch", f"must divide the model's input size {size} (whole squares), "
         f"got {s.patch}")
    start = time.perf_counter()
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = MaskedAutoencoder(backbone).to(accelerator.device)  # the same module the objective mim trains
        optimizer = create_optimizer(model, s.optim(1), s.lr)
        index = torch.arange(len(images))
        loader = DataLoader(TensorDataset(images, index), batch_size=s.batch_size, shuffle=True,
                            drop_last=len(images) >= s.batch_size * accelerator.num_processes,
                            generator=torch.Generator().manual_seed(seed))
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        steps_per_epoch = len(loader)
        need(steps_per_epoch > 0, "target_mim.batch_size", f"{len(images)} images fill no batch of {s.batch_size} "
             f"on each of {accelerator.num_processes} processes; lower it")
        scheduler = create_scheduler(optimizer, s.optim(steps_per_epoch), s.epochs * steps_per_epoch)
        scheduler.step_update(0)
        history: dict[str, list[float]] = {"loss": [], "identity_loss": [], "masked_loss": []}
        step = 0
        progress = Progress("masked pre-training on the target", s.epochs, unit="epoch")
        model.train()
        for epoch in tqdm(range(s.epochs), desc="masked pre-training on the target", unit="epoch",
                          disable=not (accelerator.is_main_process and progress)):
            sums = torch.zeros(3, device=accelerator.device)
            for pixels, which in loader:
                clean = model_input(pixels, size, mean, std)
                mask = pixel_mask(which, torch.full_like(which, epoch), size, s.patch, s.ratio)
                errors, identity = mask_and_reconstruct(model, clean, mask)
                loss = mean_l1(errors, mask, s.loss_on).mean()
                if not math.isfinite(loss.item()):
                    raise NonFiniteLossError(f"masked pre-training loss is {loss.item()} at epoch {epoch + 1}; "
                                             "lower target_mim.lr")
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                scheduler.step_update(step)
                sums += torch.stack([loss.detach(), mean_l1(identity, mask, s.loss_on).mean(),
                                     mean_l1(errors.detach(), mask, "masked").mean()])
            means = (accelerator.reduce(sums, "mean") / steps_per_epoch).tolist()
            history["loss"].append(means[0])
            history["identity_loss"].append(means[1])
            history["masked_loss"].append(means[2])
            accelerator.log({"target_mim/loss": means[0], "target_mim/identity_loss": means[1]}, step=epoch + 1)
            say(progress.line(epoch + 1, loss=means[0], identity_loss=means[1]))
        del model, optimizer, loader  # DDP wrappers go while the process group exists; the backbone stays
        accelerator.free_memory()
    return {"epochs": s.epochs, "steps": step, **history, "seconds": time.perf_counter() - start}

"""Renderer mode ``lookahead``'s settings (section ``lookahead``) and checks, read at load (no torch; the mode is
:mod:`dr_fdsl.modes.lookahead`, its equations docs/lookahead.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from dr_fdsl.modes.base_settings import ModeSpec, need_target_dataset
from dr_fdsl.settings import NOT_CONTENT, need

if TYPE_CHECKING:
    from dr_fdsl.config import Config

@dataclass
class LookaheadConfig:
    """Renderer mode ``lookahead`` (dr_fdsl/modes/lookahead.py, docs/lookahead.md): every ``every`` optimiser steps,
    a virtual backbone step ``theta' = theta - xi grad_theta L_pre`` on the rendered batch, then the rendering
    tables descend the hypergradient of a nearest-class-mean loss of ``theta'`` on labelled target images."""

    # Labelled target images: the training split of fashion_mnist, cifar10, cifar100 or folder:PATH (PATH/train).
    dataset: str = ""
    data_root: str = field(default="data", metadata=NOT_CONTENT)  # where torchvision's copies are (or go)
    # k training images per class, the same draw as tools/finetune.py's per_class with seed = this run's seed
    # (so the outer loss sees exactly the images fine-tuning uses); 0: the whole training split.
    per_class: int = 0
    every: int = 4  # k: a renderer update every k optimiser steps (cost: tools/bench.py --lookahead)
    xi: float = 0.01  # the virtual step's rate (plain gradient descent)
    classes: int = 10  # classes per outer batch (all when the target has fewer)
    shots: int = 4  # support images per class (prototypes) and as many query images (the loss)
    temperature: float = 0.1  # softmax over cosine similarities / temperature
    # "finite_difference": DARTS' central difference of the pre-training gradient (2 extra backward passes);
    # "exact": double backward through the virtual step (tests and small models).
    hypergradient: Literal["finite_difference", "exact"] = "finite_difference"
    epsilon: float = 0.01  # DARTS' r: theta +- (epsilon / |grad_theta' L_out|) grad_theta' L_out
    anchor_penalty: float = 0.0  # x mean squared distance of the drawn rows' logits from their initial values


@dataclass
class Config:
    """Everything a run needs. ``output_dir`` receives the resolved config, logs and checkpoints."""


class LookaheadSpec(ModeSpec):
    name = "lookahead"
    sections = {"lookahead": LookaheadConfig}

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        la = cfg.lookahead
        need(bool(la.dataset.strip()), "lookahead.dataset",
             "renderer.mode=lookahead measures the backbone on a labelled target dataset and none is named; set "
             "lookahead.dataset=fashion_mnist (or cifar10, cifar100, folder:PATH), or choose another renderer.mode")
        need_target_dataset(la.dataset, "lookahead.dataset")
        need(la.per_class >= 0, "lookahead.per_class",
             f"must be >= 0 (0: the whole training split), got {la.per_class}")
        need(la.every >= 1, "lookahead.every", f"must be >= 1 (a renderer update every k steps), got {la.every}")
        for key in ("xi", "temperature", "epsilon"):
            value = getattr(la, key)
            need(math.isfinite(value) and value > 0, f"lookahead.{key}", f"must be a positive number, got {value}")
        need(la.classes >= 2, "lookahead.classes", f"a softmax over prototypes needs >= 2 classes, got {la.classes}")
        need(la.shots >= 1, "lookahead.shots", f"must be >= 1, got {la.shots}")
        need(la.per_class == 0 or la.per_class >= 2 * la.shots, "lookahead.per_class",
             f"{la.per_class} images per class cannot give {la.shots} support and {la.shots} query images; raise it "
             "or lower lookahead.shots")
        need(math.isfinite(la.anchor_penalty) and la.anchor_penalty >= 0, "lookahead.anchor_penalty",
             f"must be >= 0, got {la.anchor_penalty}")
        need(cfg.train.mixed_precision != "fp16", "train.mixed_precision",
             "renderer.mode=lookahead differentiates unscaled fp16 losses (its gradients would underflow); use bf16 "
             "or no")

    @classmethod
    def table_copies(cls) -> int:
        return 4  # the tables, SparseAdam's two moments, and their initial values (drift, anchor)

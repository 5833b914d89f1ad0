"""The contract of a pre-training objective (see :mod:`dr_fdsl.objectives`)."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import nn

from dr_fdsl.config import Config, need
from dr_fdsl.models import normalization


class ObjectiveOutput(NamedTuple):
    """loss: the objective's main loss (scalar; checked for finiteness, logged as ``train/loss``).
    total: what is back-propagated (``loss`` plus any auxiliary terms the objective adds).
    metrics: scalars to log, detached, e.g. ``{"train/loss": ..., "train/acc": ...}``."""

    loss: torch.Tensor
    total: torch.Tensor
    metrics: dict[str, torch.Tensor]


def refuse_pixel_pipelines(cfg: Config, objective: str) -> None:
    """For an objective that does not run ``image_aug``: its pixel pipelines, if configured, would be silently
    ignored, so they are a ``ConfigError``."""
    a = cfg.image_aug
    on = [key for key, active in (
        ("image_aug.random_resized_crop.enabled", a.random_resized_crop.enabled),
        ("image_aug.randaugment", bool(a.randaugment)), ("image_aug.transpose", a.transpose > 0),
        ("image_aug.shift_scale_rotate.p", a.shift_scale_rotate.p > 0),
        ("image_aug.brightness_contrast.p", a.brightness_contrast.p > 0),
        ("image_aug.hue_saturation_value.p", a.hue_saturation_value.p > 0),
        ("image_aug.distortion.p", a.distortion.p > 0))
        if active]
    need(not on, on[0] if on else "image_aug", f"objective {objective} does not apply image_aug's pixel pipelines "
         f"({', '.join(on)} set): switch them off or use objective classify")


class Objective:
    """What a step computes from rendered images and their categories.

    An objective owns the networks it trains: ``model`` (the backbone that is exported and fine-tuned; prepared
    first, so Accelerate saves it as ``model.safetensors``) with ``optimizer`` (from
    :func:`dr_fdsl.optim.create_optimizer`; the engine schedules it), plus any heads or auxiliary modules. The engine
    calls, in order: ``prepare(accelerator)`` once;
    per micro-batch ``loss(images, class_ids, view_seeds)`` then backward; at each optimiser step
    ``clip_gradients``; for evaluation ``evaluate(images, class_ids, view_seeds)`` between ``train(False)`` and
    ``train(True)``.

    ``images`` are the renderer's ``(B, 3, H, W)`` float32 in [0, 1] (not normalised); ``class_ids`` and
    ``view_seeds`` ``(B,)`` int64 (with the category, the view seed keys any per-image randomness of the objective,
    e.g. a mask, so that the same image gets the same draw in every run and source). Gradients flowing back into
    ``images`` reach the renderer.
    """

    name: ClassVar[str]
    # How descending this objective's loss lets the renderer trivialise it ("descends the reconstruction loss: the
    # renderer could empty the image, ..."), or "" when it cannot: the renderer modes that descend it (joint,
    # match with match.joint) refuse a non-empty one (dr_fdsl/modes/)
    joint_trap: ClassVar[str] = ""
    has_probe: ClassVar[bool] = False  # trains the leakage probe (with train.probe), which renderer.leak_penalty needs
    eval_names: ClassVar[tuple[str, ...]]  # names of the columns ``evaluate`` returns

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """Checks the settings this objective depends on; raises ``ConfigError`` naming the key."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    mean: torch.Tensor  # (1, 3, 1, 1) on the training device: the backbone's input normalisation
    std: torch.Tensor

    def set_normalization(self, backbone: nn.Module, device: torch.device) -> None:
        """``mean`` and ``std`` from timm's data config for ``backbone``, on ``device``."""
        mean, std = normalization(backbone)
        self.mean, self.std = mean.to(device), std.to(device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images in [0, 1] as the backbone's input."""
        return (images - self.mean) / self.std

    # The defaults serve an objective whose networks are one module ``model`` with one ``optimizer``.
    def prepare(self, accelerator) -> None:
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)

    def modules(self) -> list[nn.Module]:
        """Every module that trains (for gradient accumulation and train/eval switching)."""
        return [self.model]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer]

    def loss(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> ObjectiveOutput:
        raise NotImplementedError

    def clip_gradients(self, max_norm: float) -> dict[str, torch.Tensor]:
        """Clips what ``optimizer`` steps to ``max_norm`` (``math.inf``: no clipping); returns norms to log."""
        raise NotImplementedError

    def evaluate(self, images: torch.Tensor, class_ids: torch.Tensor, view_seeds: torch.Tensor) -> torch.Tensor:
        """Per-image values ``(B, len(eval_names))`` float32, averaged over the evaluation set by the engine."""
        raise NotImplementedError

    def before_checkpoint(self) -> None:
        """Called before a checkpoint's weights are checked and saved: settles what a diagnostic left for its next
        step (the leakage probe restarts diverged weights), so that a diagnostic never stops training."""

    def trainer_state(self) -> dict:
        """JSON facts a resume must restore beside the weights (``trainer_state.json``; default none)."""
        return {}

    def load_trainer_state(self, state: dict) -> None:
        """Restores what :meth:`trainer_state` returned (``{}`` from checkpoints made without it)."""

    def image_grids(self, images: torch.Tensor, class_ids: torch.Tensor,
                    view_seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra TensorBoard images of what the objective does with a batch (e.g. masked, reconstructed): name ->
        ``(3, H', W')`` float32 grid in [0, 1] on the CPU. ``images``: the held-out grid views' renders, ``(B, 3, H,
        W)`` in [0, 1], with their ``(B,)`` categories and view seeds. Called on the main process only, so it must
        run no collective: use the plain modules, not the prepared (DDP) ones. Default: none."""
        return {}

    def summarize(self, values: torch.Tensor) -> dict[str, float]:
        """The evaluation's metrics from every held-out image's ``evaluate`` row ``(M, ...)``: by default the mean
        of each column, named by ``eval_names`` (an objective whose metric is not a mean over images, such as
        mean average precision, returns more columns and overrides this)."""
        return dict(zip(self.eval_names, values.mean(0).tolist()))

    def unwrap(self, accelerator) -> None:
        """Replaces the prepared (DDP-wrapped) modules by the plain ones, at the end of training."""
        self.model = accelerator.unwrap_model(self.model)

    def train(self, mode: bool = True) -> None:
        for module in self.modules():
            module.train(mode)

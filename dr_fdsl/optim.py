"""The objective's optimiser and learning-rate schedule, from ``optim`` (:class:`~dr_fdsl.config.OptimConfig`).

Optimisers come from timm (``create_optimizer_v2``: no weight decay on biases, norms and the tokens a model names in
``no_weight_decay``); schedules are timm's, counted in optimiser steps (``t_in_epochs=False``).
"""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from dr_fdsl.config import OptimConfig

_TIMM_NAMES = {"adamw": "adamw", "adam": "adam", "sgd": "momentum"}  # timm's "sgd" is Nesterov


def create_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """``cfg.name`` over ``model``'s parameters at peak learning rate ``lr``."""
    extra = {"momentum": cfg.momentum} if cfg.name == "sgd" else {"betas": cfg.betas}
    return create_optimizer_v2(model, _TIMM_NAMES[cfg.name], lr=lr, weight_decay=cfg.weight_decay, **extra)


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int) -> Scheduler:
    """Linear warm-up over ``cfg.warmup_steps`` from ``cfg.warmup_lr_init`` (negative: ``cfg.min_lr``), then

    * ``cosine``: cosine decay to ``cfg.min_lr`` at ``max_steps``;
    * ``step``: the peak learning rate until the last ``cfg.final_steps`` steps, which run at ``cfg.final_lr``
      (as a fraction ``final_lr / lr`` of each group's peak, so it scales with the batch like ``lr``).
    """
    start = cfg.min_lr if cfg.warmup_lr_init < 0 else cfg.warmup_lr_init
    if cfg.schedule == "step":
        # timm compares a milestone with t + 1 (milestone m applies from step m - 1), counting from step 0 when
        # warmup_prefix is off; the final phase starts at step max_steps - final_steps.
        return MultiStepLRScheduler(optimizer, decay_t=[max_steps - cfg.final_steps + 1],
                                    decay_rate=cfg.final_lr / cfg.lr, warmup_t=cfg.warmup_steps,
                                    warmup_lr_init=start, warmup_prefix=False, t_in_epochs=False)
    return CosineLRScheduler(optimizer, t_initial=max_steps, lr_min=cfg.min_lr, warmup_t=cfg.warmup_steps,
                             warmup_lr_init=start, t_in_epochs=False)

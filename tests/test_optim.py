"""The optimiser choice and the learning-rate schedules of ``optim``, against their definitions."""

import pytest
import torch
from torch import nn

from dr_fdsl.config import Config, OptimConfig, TrainConfig, validate_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.optim import create_optimizer, create_scheduler


def _lrs(cfg: OptimConfig, max_steps: int, lr: float) -> list[float]:
    opt = create_optimizer(nn.Linear(2, 2), cfg, lr)
    sched = create_scheduler(opt, cfg, max_steps)
    out = []
    for step in range(max_steps):
        sched.step_update(step)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_optimizer_names_give_the_published_optimisers():
    model = nn.Linear(3, 2)
    sgd = create_optimizer(model, OptimConfig(name="sgd", momentum=0.9, weight_decay=1e-4), 0.1)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] is False
    adam = create_optimizer(model, OptimConfig(name="adam", betas=(0.9, 0.99), weight_decay=0.0), 1e-4)
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.9, 0.99)
    adamw = create_optimizer(model, OptimConfig(), 1e-3)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["betas"] == (0.9, 0.999)
    # timm's grouping: the bias is not decayed
    assert sorted(g["weight_decay"] for g in adamw.param_groups) == [0.0, 0.05]


def test_step_schedule_is_the_masked_image_seeds():
    """Warm-up from 1e-9 over 5 steps, the peak, then the final constant phase (seed: last 15 of 50 epochs)."""
    cfg = OptimConfig(name="adam", lr=1e-4, warmup_steps=5, warmup_lr_init=1e-9, schedule="step",
                      final_steps=15, final_lr=5e-5)
    lrs = _lrs(cfg, 50, 1e-4)
    expected = [1e-9 + (1e-4 - 1e-9) * s / 5 for s in range(5)] + [1e-4] * 30 + [5e-5] * 15
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_cosine_schedule_unchanged_by_default():
    """Warm-up from min_lr, then cosine to min_lr: the first version's schedule (goldens rely on it)."""
    cfg = OptimConfig(lr=1e-3, warmup_steps=4, min_lr=1e-6)
    lrs = _lrs(cfg, 20, 1e-3)
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[4] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + torch.cos(torch.tensor(4 / 20 * torch.pi))).item())
    assert lrs == sorted(lrs[:5]) + sorted(lrs[5:], reverse=True)


@pytest.mark.parametrize("optim, message", [
    ({"final_steps": 3}, "optim.final_steps"),
    ({"schedule": "step", "final_steps": 99}, "optim.final_steps"),
    ({"schedule": "step", "final_lr": 1.0}, "optim.final_lr"),
    ({"momentum": 1.0}, "optim.momentum"),
    ({"betas": (0.9, 1.5)}, "optim.betas"),
    ({"warmup_lr_init": 1.0}, "optim.warmup_lr_init"),
])
def test_bad_optim_settings_name_the_key(optim, message):
    cfg = Config(train=TrainConfig(max_steps=20), optim=OptimConfig(warmup_steps=5, **optim))
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)

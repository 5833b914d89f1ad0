"""The leakage probe: how well a linear classifier that sees only colour and size statistics names the category.

When colours and radii descend the classification loss (``renderer.mode=joint``) the cheapest solution is a
colour or size code per category: the loss falls while the network learns no shape. The probe's accuracy
rising far above its value under the frozen renderer is the sign that this happened.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_FEATURES = 14


def colour_statistics(images: torch.Tensor, background: float = 0.0) -> torch.Tensor:
    """Per-image statistics blind to shape: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 14)`` float32.

    Mean and std of each channel over all pixels and over foreground pixels (any channel differing from the
    background), the foreground fraction (a size code shows here) and the mean brightness of the foreground.
    """
    images = images.detach().float()
    fg = ((images - background).abs().amax(1, keepdim=True) > 1e-3).float()  # (B, 1, H, W)
    area = fg.sum(dim=(2, 3)).clamp_min(1.0)
    fg_mean = (images * fg).sum(dim=(2, 3)) / area
    fg_std = (((images - fg_mean[..., None, None]) ** 2 * fg).sum(dim=(2, 3)) / area).sqrt()
    fraction = fg.mean(dim=(1, 2, 3))[:, None]
    brightness = fg_mean.mean(1, keepdim=True)
    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3)), fg_mean, fg_std, fraction, brightness], 1)


class LeakageProbe(nn.Module):
    """A linear softmax classifier on :func:`colour_statistics`, trained online on the training batches."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(NUM_FEATURES, affine=False)  # statistics differ in scale by orders
        self.linear = nn.Linear(NUM_FEATURES, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 14)`` statistics -> ``(B, C)`` logits."""
        return self.linear(self.norm(features))


def weights_finite(probe: nn.Module) -> torch.Tensor:
    """``()`` bool on the probe's device: whether every weight of ``probe`` (plain or DDP-wrapped) is finite."""
    return torch.stack([torch.isfinite(p).all() for p in probe.parameters()]).all()


@torch.no_grad()
def restart_(probe: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Sets the probe's weights to zero (uniform predictions; the same on every process, no random draw) and drops
    their optimiser moments, so that a diverged probe holds finite weights again (a checkpoint refuses any that are
    not) and training goes on."""
    for p in probe.parameters():
        p.zero_()
        optimizer.state.pop(p, None)

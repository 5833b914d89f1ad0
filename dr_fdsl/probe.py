"""The leakage probe: how well a linear classifier that sees only colour and size statistics names the category.

When colours and radii descend the classification loss (``renderer.mode=joint``) the cheapest solution is a
colour or size code per category: the loss falls while the network learns no shape. The probe's accuracy
rising far above its value under the frozen renderer is the sign that this happened. Two more heads of the same
probe say which: one sees only the foreground's colour statistics, the other only its size (the fraction of pixels
covered). ``renderer.leak_penalty`` makes the renderer pay for what the probe reads: the tables descend the whole
probe's cross-entropy against uniform predictions (domain confusion), which no label steers; with
``renderer.leak_form=moments`` they descend :func:`between_category_share` of the same statistics instead, which
depends on no probe weight and so has a minimum that does not move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_FEATURES = 14
COLOUR_FEATURES = (6, 7, 8, 9, 10, 11, 13)  # of colour_statistics: the foreground's mean, std and brightness
SIZE_FEATURES = (12,)  # the foreground fraction
HEADS = ("", "color_", "size_")  # metric prefixes of the probe's heads: probe/{head}train_acc, probe/{head}val_acc


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with gradient 0 at 0 (not inf, which would make the leak penalty's NaN)."""
    return torch.where(x > 0, x.clamp_min(torch.finfo(x.dtype).tiny).sqrt(), 0.0)


def colour_statistics(images: torch.Tensor, background: float = 0.0, differentiable: bool = False) -> torch.Tensor:
    """Per-image statistics blind to shape: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 14)`` float32.

    Mean and std of each channel over all pixels and over foreground pixels (any channel differing from the
    background), the foreground fraction (a size code shows here) and the mean brightness of the foreground.
    Detached unless ``differentiable`` (the leak penalty's gradient reaches the images through them; the foreground
    mask and so the fraction carry none, the radii's reach the foreground's statistics through soft edges).
    """
    images = images.float() if differentiable else images.detach().float()
    fg = ((images - background).abs().amax(1, keepdim=True) > 1e-3).detach().float()  # (B, 1, H, W)
    area = fg.sum(dim=(2, 3)).clamp_min(1.0)
    fg_mean = (images * fg).sum(dim=(2, 3)) / area
    fg_std = _sqrt(((images - fg_mean[..., None, None]) ** 2 * fg).sum(dim=(2, 3)) / area)
    fraction = fg.mean(dim=(1, 2, 3))[:, None]
    brightness = fg_mean.mean(1, keepdim=True)
    mean = images.mean(dim=(2, 3))
    pixels = images.shape[2] * images.shape[3]
    std = _sqrt(((images - mean[..., None, None]) ** 2).sum(dim=(2, 3)) / max(pixels - 1, 1))  # unbiased, as std
    return torch.cat([mean, std, fg_mean, fg_std, fraction, brightness], 1)


MOMENTS_EPS = 1e-6  # added to each statistic's batch variance: a grey level (1/255) has a variance of 1.5e-5


def between_category_share(features: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """The share of the batch's variance of each statistic that lies between categories, averaged over statistics:
    ``(B, F)`` float statistics and ``(B,)`` int64 categories -> ``()``, in [0, 1).

    For statistic ``f``, with ``m`` its batch mean, ``m_c`` its mean over the ``n_c`` images of category ``c``
    (categories present in the batch) and ``B`` the batch size::

        share_f = sum_c (n_c / B) (m_c - m)^2 / ((1 / B) sum_i (f_i - m)^2 + MOMENTS_EPS)

    i.e. between-category variance over total variance of the statistics standardised by the batch (the ratio is
    blind to each statistic's scale, which differs by orders; the eps keeps a constant statistic at 0). It is 0
    exactly when every category's mean statistics are equal: what a linear probe on standardised statistics could
    read of the label through their means. The leak penalty's ``moments`` form: unlike the confusion term it uses no
    probe weight, so the tables descend a fixed target instead of chasing a probe retrained every step (quickstart:
    confusion kept the probe 21-28 points above frozen's and halved val/top1, docs/rendering.md)."""
    x = features.float()
    _, category = class_ids.unique(return_inverse=True)
    onehot = F.one_hot(category).to(x.dtype)  # (B, K) over the K categories present
    counts = onehot.sum(0)  # (K,) all >= 1
    mean = x.mean(0)  # (F,)
    category_means = (onehot.T @ x) / counts[:, None]  # (K, F)
    between = (counts[:, None] * (category_means - mean) ** 2).sum(0) / x.shape[0]
    total = ((x - mean) ** 2).mean(0)
    return (between / (total + MOMENTS_EPS)).mean()


class LeakageProbe(nn.Module):
    """Linear softmax classifiers on :func:`colour_statistics`, trained online on the training batches: the probe
    on all 14 (``linear``), and two heads on the colour-only and the size-only statistics. The heads start at zero
    (uniform predictions) and draw no random number, so adding them changed no other draw of a run."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(NUM_FEATURES, affine=False)  # statistics differ in scale by orders
        self.linear = nn.Linear(NUM_FEATURES, num_classes)
        self.register_buffer("color_index", torch.tensor(COLOUR_FEATURES), persistent=False)
        self.register_buffer("size_index", torch.tensor(SIZE_FEATURES), persistent=False)
        self.color_weight = nn.Parameter(torch.zeros(num_classes, len(COLOUR_FEATURES)))
        self.color_bias = nn.Parameter(torch.zeros(num_classes))
        self.size_weight = nn.Parameter(torch.zeros(num_classes, len(SIZE_FEATURES)))
        self.size_bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor, penalty: float = 0.0) -> tuple[torch.Tensor, ...]:
        """``(B, 14)`` statistics -> the ``(B, C)`` logits of the whole probe, the colour head and the size head, all
        on detached statistics (the probe learns only from them), and the renderer's ``()`` leak term.

        The leak term is ``penalty`` x the whole probe's cross-entropy against the uniform distribution, its weights
        held fixed (domain confusion, Tzeng et al. 2015): what computed the statistics descends it towards images the
        probe cannot tell apart. Not a reversal of the probe's own cross-entropy: ascending it pushes each category's
        images away from that category's weights, a different direction per category, which per-category tables
        follow, writing a new colour code that the probe, as fast as the tables, reads again (quickstart, 400 steps:
        probe 0.635 without the penalty, 0.900 with a reversal of scale 1, its colour head 0.845). The confusion
        term's gradient does not depend on the labels. 0 (no graph) when ``penalty`` is 0."""
        x = self.norm(features)
        confusion = x.new_zeros(())
        if penalty > 0:
            logits = F.linear(x, self.linear.weight.detach(), self.linear.bias.detach())
            confusion = -penalty * F.log_softmax(logits.float(), 1).mean()
        x = x.detach()
        return (self.linear(x), F.linear(x[:, self.color_index], self.color_weight, self.color_bias),
                F.linear(x[:, self.size_index], self.size_weight, self.size_bias), confusion)


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

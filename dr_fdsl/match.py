"""Renderer mode ``match``: rendering parameters that make the rendered images look like the target domain.

In the spirit of learning to simulate (Ruiz et al., 2019) and Meta-Sim (Kar et al., 2019), which learn a
simulator's parameters by matching the distribution of its images to real ones: here the renderer's colours and
radii descend a distance between statistics of a rendered batch and of a batch of unlabelled training images of
the target dataset (the one fine-tuning will use), while the objective keeps learning the fractal categories from
the same rendered batch (which gradient goes where: ``dr_fdsl/engine/step.py``). It is a renderer-side term: it
works with any objective.

The distance (``match.distance``) is a weighted sum of three terms, each a statistic of a *set* of images
``(B, 3, H, W)`` float32 in [0, 1], computed on the rendered and the target set:

* ``mmd``: squared kernel maximum mean discrepancy (Gretton et al., JMLR 2012) between image features: fixed
  random convolutions (seeded, never trained) and/or the objective's backbone's first blocks (parameters detached:
  the backbone is not pulled towards the target by this term). RBF kernels at 0.25, 1 and 4 times the median
  heuristic (the median squared distance of the pooled features, detached), summed. Unbiased (U-statistic, eq. 3 of
  Gretton et al.: zero in expectation when both sets come from one distribution, can be negative) or biased
  (V-statistic: exactly zero for identical sets, never negative).
* ``moments``: colour moments of all pixels: ``|mean_r - mean_t|^2 + |cov_r - cov_t|_F^2`` (3 channel means and
  the 3 x 3 covariance; the standard deviations are its diagonal).
* ``spectrum``: the radially averaged power spectrum of the mean-free images (averaged over images and
  channels), compared as the mean squared difference of its logarithms over the radii 1 .. H/2.

Meta-Sim matches features of an ImageNet-trained network; no pre-trained weights can be loaded here, so the
default features are random convolutions (which already separate colour, texture and scale statistics), and the
the backbone's own early layers are the option that learns.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from dr_fdsl.config import Config
from dr_fdsl.errors import ConfigError
from dr_fdsl.frozen_eval import model_input
from dr_fdsl.modes.match_settings import TERMS, MatchConfig, parse_distance, random_feature_bytes  # noqa: F401
from dr_fdsl.view_order import counter_seed

KERNEL_SCALES = (0.25, 1.0, 4.0)  # RBF bandwidths, as multiples of the median squared distance
_SALT = 0x6D61746368  # "match": separates the target batchess from the view streams of the same seed
_SPECTRUM_EPS = 1e-8  # floor of the power before the logarithm (an all-black set has none)


# --------------------------------------------------------------------------------------------------------
# The terms: pure functions of two sets of images or features
# --------------------------------------------------------------------------------------------------------


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(m, D)``, ``(n, D)`` -> ``(m, n)`` squared Euclidean distances from explicit differences (not the
    ``|a|^2 + |b|^2 - 2ab`` expansion, whose rounding depends on where a pair sits in the matrix: equal rows give
    bit-equal distances here, so the biased MMD of identical sets is exactly zero). ``cdist``'s difference kernel
    is 20x faster than broadcasting the differences (forward and backward, 64 x 448 features on one CPU core)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def mmd2(x: torch.Tensor, y: torch.Tensor, estimator: str = "unbiased",
         scales: tuple[float, ...] = KERNEL_SCALES) -> torch.Tensor:
    """Squared MMD between feature sets ``x (m, D)`` and ``y (n, D)`` (m, n >= 2) with a sum of RBF kernels
    ``exp(-d^2 / (s * median))``, the median of the off-diagonal squared distances of the pooled set (the lower of
    the two middle values, as ``torch.median``; detached).

    ``unbiased``: ``sum_{i != j} k(x_i, x_j) / (m(m-1)) + sum_{i != j} k(y_i, y_j) / (n(n-1)) - 2 mean k(x, y)``;
    ``biased``: the three means over all pairs (zero for identical sets). Returns a scalar float32.
    """
    m, n = len(x), len(y)
    pooled = torch.cat([x, y]).float()
    d2 = squared_distances(pooled, pooled)
    with torch.no_grad():
        off_diagonal = d2[~torch.eye(m + n, dtype=torch.bool, device=d2.device)]
        bandwidth = off_diagonal.median().clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (s * bandwidth)) for s in scales)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * kxy.mean()


def colour_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels of a set ``(B, 3, H, W)``: channel means ``(3,)`` and covariance ``(3, 3)`` (divided by the count
    of pixels)."""
    pixels = images.float().transpose(0, 1).reshape(images.shape[1], -1)  # (3, B*H*W)
    mean = pixels.mean(1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / pixels.shape[1]


def moments_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|mean_a - mean_b|^2 + |cov_a - cov_b|_F^2`` of two image sets' pixel colours (scalar)."""
    (mean_a, cov_a), (mean_b, cov_b) = colour_moments(a), colour_moments(b)
    return ((mean_a - mean_b) ** 2).sum() + ((cov_a - cov_b) ** 2).sum()


def radial_power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """The set's power spectrum ``|FFT(x - mean x)|^2 / (H W)`` averaged over images and channels, then over rings
    of integer radius ``round(sqrt(fy^2 + fx^2))`` = 1 .. H // 2 (cycles per image): ``(H // 2,)`` float32."""
    b, c, h, w = images.shape
    x = images.float() - images.float().mean((-2, -1), keepdim=True)
    power = (torch.fft.fft2(x).abs() ** 2).mean((0, 1)) / (h * w)  # (H, W)
    fy = torch.fft.fftfreq(h, 1 / h, device=images.device)
    fx = torch.fft.fftfreq(w, 1 / w, device=images.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).round().long().flatten()
    rings = min(h, w) // 2
    keep = (radius >= 1) & (radius <= rings)
    sums = torch.zeros(rings + 1, device=images.device).index_add(0, radius[keep], power.flatten()[keep])
    counts = torch.bincount(radius[keep], minlength=rings + 1)
    return sums[1:] / counts[1:]


def spectrum_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the log radial power spectra of two image sets (scalar)."""
    log_a = torch.log(radial_power_spectrum(a) + _SPECTRUM_EPS)
    log_b = torch.log(radial_power_spectrum(b) + _SPECTRUM_EPS)
    return ((log_a - log_b) ** 2).mean()


# --------------------------------------------------------------------------------------------------------
# Features for the MMD
# --------------------------------------------------------------------------------------------------------


class RandomConvFeatures(nn.Module):
    """Fixed random convolutions: ``layers`` 3x3 convolutions of stride 2 (``channels``, doubled at each layer),
    He-normal weights from ``seed``, ReLU; the features are each layer's per-channel mean and standard deviation
    over positions. ``(B, 3, H, W)`` in [0, 1] -> ``(B, 2 * channels * (2^layers - 1))`` float32.

    The weights are non-persistent buffers: never trained, rebuilt from the seed, not in checkpoints."""

    def __init__(self, layers: int, channels: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        width, self.layers = 3, layers
        for i in range(layers):
            out = channels * 2**i
            weight = torch.randn(out, width, 3, 3, generator=generator) * math.sqrt(2.0 / (width * 9))
            self.register_buffer(f"weight{i}", weight, persistent=False)
            width = out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, features = images.float() - 0.5, []
        for i in range(self.layers):
            h = F.relu(F.conv2d(h, getattr(self, f"weight{i}"), stride=2, padding=1))
            features += [h.mean((2, 3)), h.std((2, 3), correction=0)]
        return torch.cat(features, 1)


@contextmanager
def detached_parameters(module: nn.Module):
    """Within the block, ``module``'s parameters take no gradient (images through it still do); restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def backbone_of(model: nn.Module) -> nn.Module:
    """The timm backbone inside an objective's (unwrapped) model: the model itself, or its ``backbone`` (mim)."""
    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "forward_intermediates"):
        raise ConfigError(f"config key 'match.features': 'classifier' reads the backbone's first blocks through "
                          f"timm's forward_intermediates, which {type(backbone).__name__} lacks; use "
                          "match.features=random or another model.name")
    return backbone


def classifier_features(backbone: nn.Module, images: torch.Tensor, blocks: int, mean: torch.Tensor,
                        std: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and std over positions of block ``blocks - 1``'s output (timm ``forward_intermediates``,
    NCHW), the backbone's parameters detached: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 2 * width)`` float32."""
    with detached_parameters(backbone):
        (h,) = backbone.forward_intermediates((images.float() - mean) / std, indices=[blocks - 1],
                                              intermediates_only=True, stop_early=True)
    h = h.float()
    return torch.cat([h.mean((2, 3)), h.std((2, 3), correction=0)], 1)


# --------------------------------------------------------------------------------------------------------
# The distance of a config, the target set and its stream
# --------------------------------------------------------------------------------------------------------


class Distance(NamedTuple):
    """total: the weighted sum (scalar, graph to the rendered images); terms: each term's value, detached."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class MatchDistance(nn.Module):
    """``match.distance`` between a rendered and a target set of images ``(B, 3, H, W)`` float32 in [0, 1].

    ``backbone``: a callable returning the objective's (unwrapped) timm backbone, for ``features`` ``classifier`` or
    ``both``; ``mean``/``std`` ``(1, 3, 1, 1)``: its input normalisation."""

    def __init__(self, cfg: MatchConfig, backbone=None, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        self.cfg, self.terms = cfg, parse_distance(cfg.distance)
        self.random = RandomConvFeatures(cfg.random_layers, cfg.random_channels, cfg.feature_seed) \
            if cfg.features in ("random", "both") else None
        self.backbone = backbone if cfg.features in ("classifier", "both") else None
        if self.backbone is not None:
            backbone_of(self.backbone())  # fails now, not at the first step
            self.register_buffer("mean", mean.clone(), persistent=False)
            self.register_buffer("std", std.clone(), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.random is not None:
            parts.append(self.random(images))
        if self.backbone is not None:
            parts.append(classifier_features(backbone_of(self.backbone()), images, self.cfg.classifier_blocks,
                                             self.mean, self.std))
        return torch.cat(parts, 1)

    def forward(self, rendered: torch.Tensor, target: torch.Tensor) -> Distance:
        with torch.autocast(device_type=rendered.device.type, enabled=False):  # statistics in float32
            terms = {}
            for _, name in self.terms:
                if name == "mmd":
                    with torch.no_grad():  # no backward through the target's features (half the work)
                        target_features = self.features(target)
                    terms[name] = mmd2(self.features(rendered), target_features, self.cfg.estimator)
                elif name == "moments":
                    terms[name] = moments_distance(rendered, target)
                else:
                    terms[name] = spectrum_distance(rendered, target)
            total = sum(weight * terms[name] for weight, name in self.terms)
        return Distance(total, {k: v.detach() for k, v in terms.items()})


def load_targets(cfg: Config) -> torch.Tensor:
    """The target set: ``match.images`` training images of ``match.dataset`` (a subset drawn with the run's seed;
    all when 0), labels dropped: ``(N, 3, h, w)`` uint8 on the CPU, at the dataset's own size (folders: the
    renderer's). Raises DataError when the dataset cannot be read."""
    from dr_fdsl import datasets

    m = cfg.match
    pixels = datasets.load(m.dataset, train=True, root=m.data_root, size=cfg.renderer.image_size).images
    if m.dataset.startswith("folder:"):  # what this process loaded is what its checkpoints record
        _LOADED_DIGESTS[m.dataset] = _folder_digest(cfg)
    if 0 < m.images < len(pixels):
        order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(counter_seed(cfg.seed, _SALT)))
        pixels = pixels[order[:m.images].sort().values]
    return pixels.contiguous()


_LOADED_DIGESTS: dict[str, str] = {}  # match.dataset -> the digest of the images load_targets read last


def target_digest(cfg: Config) -> str:
    """What the checkpoint fingerprint records of a ``folder:`` target (``match.dataset``): a digest of the bytes of
    the images :func:`load_targets` read from its training split, taken when it read them (so a checkpoint records
    the images the run trained on, even if the folder changed since, and a save re-reads nothing); before any load,
    the folder as it is now."""
    return _LOADED_DIGESTS.get(cfg.match.dataset) or _folder_digest(cfg)


def _folder_digest(cfg: Config) -> str:
    """``datasets.folder_digest`` of the target's training split, cached beside the banks (``bank.cache_dir``: the
    project's own cache, writable by every run, unlike a dataset folder that may be read-only or shared), so a
    second look re-reads only files changed since."""
    from dr_fdsl import datasets

    cache = cfg.bank.cache_dir or None
    return datasets.folder_digest(datasets.folder_split(cfg.match.dataset, train=True), cache)


class TargetBatches:
    """This process's stream of target batches: micro-batch ``k`` draws ``batch`` indices (with replacement) from a
    generator seeded by ``(seed, rank, k)``, so ``index`` (the next ``k``) is the whole state, checkpointed."""

    def __init__(self, pixels: torch.Tensor, image_size: int, batch: int, seed: int, rank: int):
        self.pixels, self.image_size, self.batch_size, self.seed, self.rank = pixels, image_size, batch, seed, rank
        self.index = 0
        self._zeros = torch.zeros(1, 3, 1, 1, device=pixels.device)
        self._ones = torch.ones(1, 3, 1, 1, device=pixels.device)

    def images(self, which: torch.Tensor) -> torch.Tensor:
        """Target images ``which (b,)`` as ``(b, 3, S, S)`` float32 in [0, 1] at the renderer's size S (bilinear, as
        fine-tuning resizes its inputs)."""
        return model_input(self.pixels[which.to(self.pixels.device)], self.image_size, self._zeros, self._ones)

    def indices(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(counter_seed(self.seed, self.rank, index, _SALT))
        return torch.randint(0, len(self.pixels), (self.batch_size,), generator=generator)

    def draw(self) -> torch.Tensor:
        """The next target batch (advances ``index``)."""
        out = self.images(self.indices(self.index))
        self.index += 1
        return out


class Matcher:
    """What a run in mode ``match`` holds: the distance, the target batches and the settings."""

    def __init__(self, cfg: Config, objective, accelerator):
        m = cfg.match
        backbone = None
        if m.features in ("classifier", "both"):
            def backbone():
                return accelerator.unwrap_model(objective.model)
        mean = std = None
        if backbone is not None:
            from dr_fdsl.models import normalization

            mean, std = normalization(backbone_of(backbone()))
        self.weight, self.joint = m.weight, m.joint
        self.distance = MatchDistance(m, backbone, mean, std).to(accelerator.device)
        pixels = load_targets(cfg).to(accelerator.device)
        self.targets = TargetBatches(pixels, cfg.renderer.image_size, m.batch, cfg.seed, accelerator.process_index)

    def __call__(self, rendered: torch.Tensor) -> Distance:
        """The distance between ``rendered (B, 3, H, W)`` and the next target batch."""
        return self.distance(rendered, self.targets.draw())

    def target_grid(self, count: int, nrow: int) -> torch.Tensor:
        """The first ``count`` target images (the same at every call) as a ``(3, H', W')`` grid on the CPU."""
        which = torch.arange(min(count, len(self.targets.pixels)))
        return make_grid(self.targets.images(which).cpu(), nrow=nrow, padding=2, pad_value=0.5)

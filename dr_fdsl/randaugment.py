"""RandAugment as timm configures it, applied on the device to a batch, each image with its own draws.

timm parses the config string (``rand-m9-mstd0.5-inc1``: magnitude 9, magnitude noise N(0, 0.5), the "increasing"
op set, 2 layers, each applied with probability 0.5): :func:`parse_randaugment` builds timm's own ``RandAugment``
and reads its op names, probabilities, magnitudes and layer count from it, so what the string means is timm's.
Each op is then the batched equivalent of timm's PIL function (:mod:`dr_fdsl.image_ops`; tests/test_image_ops.py
compares every one with timm's on uint8 images).

Per image and layer, as timm draws per image: an op (uniform with replacement, or timm's weights without), whether
it applies (its probability), its magnitude (``N(m, mstd)`` clipped to [0, mmax or 10]; uniform on [0, m] for an
infinite std), the sign of signed arguments (50 %), and with ``interpolation=random`` the resampling. The draws
come from torch's global generator in a fixed number per batch, so the stream does not depend on the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dr_fdsl import image_ops as ops
from dr_fdsl.errors import ConfigError

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitudes are tenths of the strongest setting

# The ops of timm's two RandAugment sets (_RAND_TRANSFORMS, _RAND_INCREASING_TRANSFORMS) and their arguments.
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing", "ContrastIncreasing",
          "BrightnessIncreasing", "SharpnessIncreasing"}
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
SUPPORTED = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
             "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast",
             "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing", "ShearX",
             "ShearY", "TranslateXRel", "TranslateYRel")


@dataclass(frozen=True)
class RandAugmentSpec:
    """What timm's ``rand_augment_transform(config_str)`` builds, as numbers."""

    names: tuple[str, ...]
    num_layers: int
    prob: float  # per op and layer
    magnitude: float
    magnitude_std: float  # 0: fixed, inf: uniform on [0, magnitude]
    magnitude_max: float
    weights: tuple[float, ...] | None  # timm's choice weights ('t' sets); then ops are drawn without replacement
    translate_pct: float


def parse_randaugment(config_str: str) -> RandAugmentSpec:
    """timm's reading of a RandAugment config string; :class:`ConfigError` naming ``image_aug.randaugment`` if
    timm refuses it or it selects an op not implemented here."""
    from timm.data.auto_augment import rand_augment_transform

    key = "config key 'image_aug.randaugment'"
    try:
        ra = rand_augment_transform(config_str, {})
    except Exception as err:  # timm asserts on the string's form
        raise ConfigError(f"{key}: timm cannot parse {config_str!r} ({type(err).__name__}: {err}); use timm's form, "
                          "e.g. 'rand-m9-mstd0.5-inc1'") from err
    names = tuple(op.name for op in ra.ops)
    unknown = sorted(set(names) - set(SUPPORTED))
    if unknown:
        raise ConfigError(f"{key}: {config_str!r} selects {unknown}, which are not implemented on the device; the "
                          f"supported ops are {list(SUPPORTED)}")
    first = ra.ops[0]
    if any((op.prob, op.magnitude, op.magnitude_std, op.magnitude_max) !=
           (first.prob, first.magnitude, first.magnitude_std, first.magnitude_max) for op in ra.ops):
        raise ConfigError(f"{key}: {config_str!r} gives its ops different settings, which is not supported")
    weights = None if ra.choice_weights is None else tuple(float(w) for w in ra.choice_weights)
    return RandAugmentSpec(names=names, num_layers=int(ra.num_layers), prob=float(first.prob),
                           magnitude=float(first.magnitude), magnitude_std=float(first.magnitude_std),
                           magnitude_max=float(first.magnitude_max or LEVEL_DENOM), weights=weights,
                           translate_pct=float(first.hparams.get("translate_pct", 0.45)))


def op_argument(name: str, magnitude: torch.Tensor, negate: torch.Tensor, translate_pct: float = 0.45):
    """timm's ``LEVEL_TO_ARG[name]`` for ``magnitude (B,)`` float64, with ``negate (B,)`` bool standing for its
    ``_randomly_negate`` draw: ``(B,)`` (float64, or int64 for bit counts and levels), or None for ops without."""
    level = magnitude.double() / LEVEL_DENOM
    sign = torch.where(negate, -1.0, 1.0).to(level)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return level * 30.0 * sign
    if name in ("ShearX", "ShearY"):
        return level * 0.3 * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return level * translate_pct * sign
    if name.endswith("Increasing") and name[:-len("Increasing")] in ("Color", "Contrast", "Brightness",
                                                                        "Sharpness"):
        return (1.0 + level * 0.9 * sign).clamp_min(0.1)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1
    # int() of a non-negative number: floor. (level * 4 etc. in float64, as Python computes it.)
    if name == "Posterize":
        return (level * 4).floor().long()
    if name == "PosterizeIncreasing":
        return 4 - (level * 4).floor().long()
    if name == "PosterizeOriginal":
        return (level * 4).floor().long() + 4
    if name == "Solarize":
        return (level * 256).floor().long().clamp_max(256)
    if name == "SolarizeIncreasing":
        return 256 - (level * 256).floor().long().clamp_max(256)
    if name == "SolarizeAdd":
        return (level * 110).floor().long().clamp_max(128)
    raise ValueError(f"no RandAugment op {name!r}")


def apply_op(name: str, images: torch.Tensor, arg: torch.Tensor | None, kernel: str,
             fill: torch.Tensor) -> torch.Tensor:
    """timm's op ``name`` on ``images (n, 3, H, W)`` in 0..255 units with per-image ``arg (n,)``; ``kernel`` the
    resampling of geometric ops, ``fill (n, 3)`` their fill colour (timm's ``img_mean``)."""
    n, _, h, w = images.shape
    base = name[:-len("Increasing")] if name.endswith("Increasing") else name
    if name == "AutoContrast":
        return ops.autocontrast(images)
    if name == "Equalize":
        return ops.equalize(images)
    if name == "Invert":
        return 255.0 - images
    if base in ("Posterize", "PosterizeOriginal"):
        return ops.posterize(images, arg)
    if base == "Solarize":
        return ops.solarize(images, arg)
    if name == "SolarizeAdd":
        return ops.solarize_add(images, arg)
    if base == "Color":
        return ops.blend(ops.luma(images).expand_as(images), images, arg)
    if base == "Contrast":
        return ops.blend(ops.luma(images).mean((1, 2, 3), keepdim=True).expand_as(images), images, arg)
    if base == "Brightness":
        return ops.blend(torch.zeros_like(images), images, arg)
    if base == "Sharpness":
        return ops.blend(ops.smooth(images), images, arg)
    one, zero = torch.ones_like(arg), torch.zeros_like(arg)
    if name == "Rotate":
        matrix = ops.pil_rotate_matrix(arg, w, h)
    elif name == "ShearX":
        matrix = torch.stack([one, arg, zero, zero, one, zero], 1)
    elif name == "ShearY":
        matrix = torch.stack([one, zero, zero, arg, one, zero], 1)
    elif name == "TranslateXRel":
        matrix = torch.stack([one, zero, arg * w, zero, one, zero], 1)
    elif name == "TranslateYRel":
        matrix = torch.stack([one, zero, zero, zero, one, arg * h], 1)
    else:
        raise ValueError(f"no RandAugment op {name!r}")
    return ops.pil_affine(images, matrix, kernel, fill)


class RandAugment:
    """timm's RandAugment over a batch: ``__call__(images (B, 3, H, W) in 0..255) -> same``."""

    def __init__(self, spec: RandAugmentSpec, interpolation: str, fill: tuple[float, float, float]):
        """``interpolation``: bicubic, bilinear or random (timm's create_transform passes its --interpolation);
        ``fill``: the colour of pixels moved in from outside, timm's ``img_mean`` (round(255 * mean))."""
        self.spec, self.interpolation, self.fill = spec, interpolation, fill

    def draw(self, b: int, device) -> dict[str, torch.Tensor]:
        """Every random choice for a batch of ``b`` images, ``(b, num_layers)`` each."""
        s, layers = self.spec, self.spec.num_layers
        if s.weights is None:
            choice = torch.randint(len(s.names), (b, layers), device=device)
        else:
            weights = torch.tensor(s.weights, device=device, dtype=torch.float64).expand(b, -1)
            choice = torch.multinomial(weights, layers, replacement=False)
        apply = torch.rand(b, layers, device=device, dtype=torch.float64) <= s.prob
        noise = torch.randn(b, layers, device=device, dtype=torch.float64)
        uniform = torch.rand(b, layers, device=device, dtype=torch.float64)
        # timm: uniform on [0, m] for an infinite std, else N(m, std); clipped to [0, mmax]
        magnitude = uniform * s.magnitude if math.isinf(s.magnitude_std) else s.magnitude + s.magnitude_std * noise
        magnitude = magnitude.clamp(0.0, s.magnitude_max)
        negate = torch.rand(b, layers, device=device) > 0.5
        bicubic = torch.rand(b, layers, device=device) < 0.5
        if self.interpolation != "random":
            bicubic = torch.full_like(bicubic, self.interpolation == "bicubic")
        return {"choice": choice, "apply": apply, "magnitude": magnitude, "negate": negate, "bicubic": bicubic}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.draw(images.shape[0], images.device))

    def apply(self, images: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """``images`` with the ops of ``draws`` (from :meth:`draw`) applied layer after layer."""
        fill = images.new_tensor(self.fill).expand(images.shape[0], 3)
        for layer in range(self.spec.num_layers):
            for k, name in enumerate(self.spec.names):
                chosen = (draws["choice"][:, layer] == k) & draws["apply"][:, layer]
                # only geometric ops resample; the others run once over all their images
                for bicubic in (False, True) if name in GEOMETRIC else (False,):
                    group = chosen & (draws["bicubic"][:, layer] == bicubic) if name in GEOMETRIC else chosen
                    rows = group.nonzero()[:, 0]
                    if rows.numel() == 0:
                        continue
                    arg = op_argument(name, draws["magnitude"][rows, layer], draws["negate"][rows, layer],
                                      self.spec.translate_pct)
                    done = apply_op(name, images[rows], arg, "bicubic" if bicubic else "bilinear", fill[rows])
                    images = images.index_copy(0, rows, done)
        return images

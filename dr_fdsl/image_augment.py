"""Image augmentations on the device, after rendering: the published recipes' pixel pipelines (random resized crop,
the contest's albumentations operations, timm's RandAugment), flips, random erasing, Mixup/CutMix with soft targets.

The pixel operations run on the rendered images in 0..255 units (the published pipelines work on uint8 pictures,
and their limits are in those units: :mod:`dr_fdsl.image_ops`), before normalisation; random erasing (noise in
normalised units) and Mixup/CutMix after it, as in timm's training transforms.
"""

from __future__ import annotations

import math

import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from dr_fdsl import image_ops as ops
from dr_fdsl.image_augment_settings import ImageAugConfig
from dr_fdsl.randaugment import RandAugment, parse_randaugment


def _uniform(shape, low: float, high: float, device) -> torch.Tensor:
    """U(low, high), float64 (the published draws are Python floats)."""
    return low + (high - low) * torch.rand(shape, device=device, dtype=torch.float64)


def _where(images: torch.Tensor, chosen: torch.Tensor, operation) -> torch.Tensor:
    """``operation(images[rows], rows)`` written into the chosen rows only (no work on the others)."""
    rows = chosen.nonzero()[:, 0]
    if rows.numel() == 0:
        return images
    return images.index_copy(0, rows, operation(images[rows], rows))


def crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
               device) -> tuple[torch.Tensor, ...]:
    """timm's ``RandomResizedCropAndInterpolation.get_params`` for ``b`` images of ``h x w``: 10 tries of an area
    fraction U(scale) and a log-uniform aspect ratio, the first that fits wins, placed uniformly; else the centre
    crop of the clamped aspect ratio. Returns ``top, left, height, width (b,)`` int64."""
    area = h * w
    target = _uniform((b, 10), scale[0], scale[1], device) * area
    aspect = torch.exp(_uniform((b, 10), math.log(ratio[0]), math.log(ratio[1]), device))
    widths = torch.round(torch.sqrt(target * aspect)).long()  # Python's round: half to even, as torch's
    heights = torch.round(torch.sqrt(target / aspect)).long()
    fits = (widths <= w) & (heights <= h)
    first = fits.long().argmax(1, keepdim=True)  # the first try that fits
    place = torch.rand(b, 2, device=device, dtype=torch.float64)
    height, width = heights.gather(1, first)[:, 0], widths.gather(1, first)[:, 0]
    top = (place[:, 0] * (h - height + 1)).floor().long()  # random.randint(0, h - height)
    left = (place[:, 1] * (w - width + 1)).floor().long()
    if w / h < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif w / h > max(ratio):
        fw, fh = int(round(h * max(ratio))), h
    else:
        fw, fh = w, h
    fallback = ~fits.any(1)
    height, width = torch.where(fallback, fh, height), torch.where(fallback, fw, width)
    top, left = torch.where(fallback, (h - fh) // 2, top), torch.where(fallback, (w - fw) // 2, left)
    return top, left, height, width


class AlbumentationsPipeline:
    """The contest's albumentations operations after its flips, in its order, each with its probability:
    ShiftScaleRotate, RandomBrightnessContrast, HueSaturationValue, OneOf([OpticalDistortion, GridDistortion]).
    ``__call__(x (B, 3, H, W) in 0..255) -> same``; :meth:`draw` makes every random choice of a batch and
    :meth:`apply` applies given draws (one image at a time gives the same result: tests/test_image_ops.py)."""

    def __init__(self, cfg: ImageAugConfig):
        self.ssr, self.rbc = cfg.shift_scale_rotate, cfg.brightness_contrast
        self.hsv, self.distortion = cfg.hue_saturation_value, cfg.distortion
        self.active = any(c.p > 0 for c in (self.ssr, self.rbc, self.hsv, self.distortion))

    def draw(self, b: int, device) -> dict[str, torch.Tensor]:
        """Every random choice for ``b`` images, ``(b,)`` or ``(b, n)`` each (a fixed number per batch)."""
        ssr, rbc, hsv, dist = self.ssr, self.rbc, self.hsv, self.distortion
        grid = dist.grid_steps + 1
        return {
            "ssr": torch.rand(b, device=device) < ssr.p,
            "angle": _uniform(b, -ssr.rotate_limit, ssr.rotate_limit, device),
            "scale": _uniform(b, 1 - ssr.scale_limit, 1 + ssr.scale_limit, device),
            "shift": _uniform((b, 2), -ssr.shift_limit, ssr.shift_limit, device),  # (dx, dy) of the size
            "rbc": torch.rand(b, device=device) < rbc.p,
            "alpha": 1 + _uniform(b, -rbc.contrast_limit, rbc.contrast_limit, device),
            "beta": _uniform(b, -rbc.brightness_limit, rbc.brightness_limit, device),
            "hsv": torch.rand(b, device=device) < hsv.p,
            "hsv_shift": torch.stack([_uniform(b, -hsv.hue_shift_limit, hsv.hue_shift_limit, device),
                                      _uniform(b, -hsv.sat_shift_limit, hsv.sat_shift_limit, device),
                                      _uniform(b, -hsv.val_shift_limit, hsv.val_shift_limit, device)], 1),
            "distort": torch.rand(b, device=device) < dist.p,
            "optical": torch.rand(b, device=device) < 0.5,  # OneOf: the two children's p (0.5 each), normalised
            "k": _uniform(b, -dist.optical_distort_limit, dist.optical_distort_limit, device),
            # round(U(-limit, limit)) pixels: always 0 for albumentations' default limit of 0.05
            "centre": torch.round(_uniform((b, 2), -dist.optical_shift_limit, dist.optical_shift_limit, device)),
            "steps": 1 + _uniform((b, 2, grid), -dist.grid_distort_limit, dist.grid_distort_limit, device),
        }

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], x.device))

    def apply(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        _, _, h, w = x.shape
        if self.ssr.p > 0:
            forward = ops.rotation_matrix_2d(d["angle"], d["scale"], w / 2 - 0.5, h / 2 - 0.5)
            forward[:, :, 2] += d["shift"] * d["shift"].new_tensor([w, h])
            x = _where(x, d["ssr"], lambda part, rows: ops.cv2_warp_affine(part, forward[rows]))
        if self.rbc.p > 0:
            x = _where(x, d["rbc"], lambda part, rows: ops.brightness_contrast(part, d["alpha"][rows],
                                                                               d["beta"][rows]))
        if self.hsv.p > 0:
            x = _where(x, d["hsv"], lambda part, rows: ops.shift_hsv(part, *d["hsv_shift"][rows].unbind(1)))
        if self.distortion.p > 0:
            def optical(part, rows):
                centre = d["centre"][rows]
                return ops.remap(part, *ops.optical_distortion_maps(d["k"][rows], centre[:, 0], centre[:, 1], h, w))

            def grid(part, rows):
                steps = d["steps"][rows]
                return ops.remap(part, *ops.grid_distortion_maps(steps[:, 0], steps[:, 1], h, w,
                                                                 self.distortion.grid_steps))

            x = _where(x, d["distort"] & d["optical"], optical)
            x = _where(x, d["distort"] & ~d["optical"], grid)
        return x


class _Flip(torch.autograd.Function):
    """``where(chosen, x.flip(dim), x)``, whose gradient is the same permutation of the incoming one: one flip and
    one select, where autograd's would be two selects, a flip and a sum of the two branches (the learnable
    renderer's images carry a gradient through every flip)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, chosen: torch.Tensor, dim: int) -> torch.Tensor:
        # x (B, C, H, W); chosen (B, 1, 1, 1) bool
        ctx.save_for_backward(chosen)
        ctx.dim = dim
        return torch.where(chosen, x.flip(dim), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (chosen,) = ctx.saved_tensors
        return torch.where(chosen, grad.flip(ctx.dim), grad), None, None


class ImageAugment(nn.Module):
    """Batched image augmentations and the matching loss.

    Randomness comes from torch's and numpy's global generators (timm's Mixup and RandomErasing use them), which
    Accelerate saves per process in every checkpoint, so resumed runs draw the same augmentations.
    """

    def __init__(self, cfg: ImageAugConfig, num_classes: int, device: torch.device, mean: torch.Tensor,
                 std: torch.Tensor):
        """``mean, std (1, 3, 1, 1)``: the model's input normalisation (also RandAugment's fill, as timm's)."""
        super().__init__()
        self.cfg = cfg
        self.mean, self.std = mean.to(device), std.to(device)
        use_mix = cfg.mixing
        self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                           switch_prob=cfg.switch_prob, label_smoothing=cfg.label_smoothing,
                           num_classes=num_classes) if use_mix else None
        self.erase = RandomErasing(probability=cfg.random_erasing, mode="pixel", device=str(device)) \
            if cfg.random_erasing > 0 else None
        self.train_loss = SoftTargetCrossEntropy() if use_mix else LabelSmoothingCrossEntropy(cfg.label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()
        self.randaugment = None
        if cfg.randaugment:
            fill = tuple(float(min(255, round(255 * m))) for m in self.mean.flatten().tolist())  # timm's img_mean
            self.randaugment = RandAugment(parse_randaugment(cfg.randaugment), cfg.interpolation, fill)
        self.albumentations = AlbumentationsPipeline(cfg)
        # Pixel operations other than the flips work in 0..255 units; off, the images are not rescaled at all.
        self.pixel_ops = (cfg.random_resized_crop.enabled or cfg.transpose > 0 or self.albumentations.active
                          or self.randaugment is not None)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 3, H, W)`` float in [0, 1] as rendered, ``labels (B,)`` -> normalised augmented images and
        targets (soft ``(B, C)`` under Mixup/CutMix, else the labels)."""
        if self.pixel_ops:
            with torch.autocast(images.device.type, enabled=False):  # resampling in float32
                images = self.pixels(images.float() * 255.0) / 255.0
        else:
            images = self.flip(images)
        images = (images - self.mean) / self.std
        if self.erase is not None:
            images = self.erased(images)
        if self.mixup is not None:
            # timm's Mixup pairs images within the batch: an even one, which objective classify requires at load
            images, targets = self.mixup(images, labels)
            return images, targets
        return images, labels

    def erased(self, images: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing of ``images (B, 3, H, W)``, as one select: timm draws the boxes and their noise
        without reading a pixel, so erasing a NaN-filled tensor makes the same draws and writes the same noise, and
        ``where`` puts it into the images. The same values as erasing a copy in place, but where the images carry
        a gradient (a learnable renderer) autograd records one select instead of one in-place write per erased
        box, each of which copies the whole batch's gradient in the backward (measured: ~9 such copies of
        ``(32, 3, 64, 64)``, ~5 ms of a 60 ms learnable step on the 2-core VM)."""
        marks = self.erase(torch.full_like(images, float("nan"), requires_grad=False))
        return torch.where(marks.isnan(), images, marks)

    def flip(self, images: torch.Tensor) -> torch.Tensor:
        """Horizontal, then vertical flips with probabilities ``hflip`` and ``vflip``."""
        b = images.shape[0]
        for prob, dim in ((self.cfg.hflip, 3), (self.cfg.vflip, 2)):
            if prob > 0:
                flip = (torch.rand(b, device=images.device) < prob).view(b, 1, 1, 1)
                images = _Flip.apply(images, flip, dim)
        return images

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel pipeline on ``x (B, 3, H, W)`` in 0..255: random resized crop (timm), transpose and flips,
        the contest's albumentations operations in its order, RandAugment (timm)."""
        cfg, b = self.cfg, x.shape[0]
        if cfg.random_resized_crop.enabled:
            x = self.random_resized_crop(x)
        if cfg.transpose > 0:
            chosen = torch.rand(b, device=x.device) < cfg.transpose
            x = torch.where(chosen.view(b, 1, 1, 1), x.transpose(2, 3), x)
        x = self.flip(x)
        if self.albumentations.active:
            x = self.albumentations(x)
        if self.randaugment is not None:
            x = self.randaugment(x)
        return x

    def random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        """timm's RandomResizedCropAndInterpolation, back to the image's own size."""
        b, _, h, w = x.shape
        c = self.cfg.random_resized_crop
        top, left, height, width = crop_boxes(b, h, w, tuple(c.scale), tuple(c.ratio), x.device)
        bicubic = torch.rand(b, device=x.device) < 0.5
        if self.cfg.interpolation != "random":
            bicubic = torch.full_like(bicubic, self.cfg.interpolation == "bicubic")
        for kernel, chosen in (("bicubic", bicubic), ("bilinear", ~bicubic)):
            x = _where(x, chosen, lambda part, rows, kernel=kernel: ops.pil_resized_crop(
                part, top[rows], left[rows], height[rows], width[rows], (h, w), kernel))
        return x

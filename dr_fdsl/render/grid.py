"""Image grids of renders, for TensorBoard and PNG files."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image


@torch.no_grad()
def render_grid(renderer, class_ids: torch.Tensor, view_seeds: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """Renders ``(B,)`` (category, view seed) pairs into one ``(3, H', W')`` float32 grid in [0, 1] on the CPU."""
    return image_grid(renderer(class_ids, view_seeds), nrow)


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """``(B, 3, H, W)`` images in [0, 1] as one ``(3, H', W')`` float32 grid on the CPU, framed in grey."""
    return make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=0.5)


def save_grid(grid: torch.Tensor, path: str | Path) -> Path:
    """Writes a ``(3, H, W)`` grid in [0, 1] as an 8-bit PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path

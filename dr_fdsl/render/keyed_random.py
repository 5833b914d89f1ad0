"""Counter-based random numbers keyed per image, so that an image depends on its own key and nothing else.

A batch-wide ``torch.Generator`` would make a sample depend on its position in the batch and on what else was
drawn. Here every number is a hash of ``(key, stream, counter)``: the same ``(category, view seed)`` gives the
same view, augmentations and background on any batch composition and any device, bit for bit. The hash is a
32-bit integer mixer (Wellons' "triple32"-style constants below 2^31, so int64 products never overflow),
evaluated with ordinary int64 tensor ops on the batch's device.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit mixer on int64 tensors holding values in ``[0, 2^32)``."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def image_keys(class_ids: torch.Tensor, view_seeds: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """One 32-bit key per image from its category and view seed: ``(B,)`` int64 each -> ``(B,)`` int64."""
    seeds = view_seeds.long()
    key = _mix32((seeds & _M32) ^ (salt & _M32))
    key = _mix32(key ^ ((seeds >> 32) & _M32))
    return _mix32(key ^ (class_ids.long() & _M32))


def uniform(keys: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniforms in ``[0, 1)``: ``keys (B,)`` -> ``(B, *shape)`` float32 (24 random bits each, exact in float32).

    ``stream`` separates independent uses (rotation, jitter, ...) of the same key.
    """
    count = math.prod(shape)
    counter = torch.arange(count, device=keys.device, dtype=torch.long)
    base = _mix32(keys[:, None] ^ ((stream * 0x9E3779B9) & _M32))
    bits = _mix32(base ^ counter[None]) >> 8
    return (bits.float() * 2.0**-24).view(keys.shape[0], *shape)


def normal(keys: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normals by Box-Muller: ``keys (B,)`` -> ``(B, *shape)`` float32."""
    count = math.prod(shape)
    u = uniform(keys, stream, (2, count))
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))  # 1 - u in (0, 1]: finite
    return (radius * torch.cos(2.0 * math.pi * u[:, 1])).view(keys.shape[0], *shape)


def uniform_range(keys: torch.Tensor, stream: int, low_high: tuple[float, float],
                  shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Uniforms in ``[low, high)``: ``(B, *shape)``; exactly ``low`` everywhere when ``low == high``."""
    low, high = low_high
    return low + (high - low) * uniform(keys, stream, shape)

"""The rasterisers, by name (``renderer.raster_backend``): used by the renderer and by both benchmarks.

Each takes ``points (B, N, 3)`` float32 NDC, ``radii (B, N)`` (used detached), the image size and K, and returns
the same :class:`~dr_fdsl.render.types.Fragments`; the tests check the two bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

from dr_fdsl.registry import Registry
from dr_fdsl.render.raster_pytorch3d import rasterize
from dr_fdsl.render.raster_sort import rasterize_sorted
from dr_fdsl.render.types import Fragments

# RASTERIZERS.get(name): an unknown name is a config error naming the key, never a silent fallback.
RASTERIZERS: Registry[Callable[..., Fragments]] = Registry("rasteriser", "renderer.raster_backend")
RASTERIZERS.register("pytorch3d", rasterize)
RASTERIZERS.register("sort", rasterize_sorted)

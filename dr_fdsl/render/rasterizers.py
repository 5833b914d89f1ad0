"""The rasterisers, by name (``renderer.raster_backend``): used by the renderer and by both benchmarks.

Each takes ``points (B, N, 3)`` float32 NDC, ``radii (B, N)`` (used detached), the image size and K, and returns
the same :class:`~dr_fdsl.render.types.Fragments`; the tests check the two bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

from dr_fdsl.errors import ConfigError
from dr_fdsl.render.raster_pytorch3d import rasterize
from dr_fdsl.render.raster_sort import rasterize_sorted
from dr_fdsl.render.types import Fragments

RASTERIZERS: dict[str, Callable[..., Fragments]] = {"pytorch3d": rasterize, "sort": rasterize_sorted}


def get_rasterizer(name: str) -> Callable[..., Fragments]:
    """The rasteriser registered as ``name``; an unknown name is an error, never a silent fallback."""
    if name not in RASTERIZERS:
        raise ConfigError(f"config key 'renderer.raster_backend': unknown rasteriser {name!r}; valid: "
                          f"{', '.join(sorted(RASTERIZERS))}")
    return RASTERIZERS[name]

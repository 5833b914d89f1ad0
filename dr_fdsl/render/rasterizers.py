"""The rasterisers, by name (``renderer.raster_backend``): used by the renderer and by both benchmarks.

Each takes ``points (B, N, 3)`` float32 NDC, ``radii (B, N)`` (used detached), the image size and K, and returns
the same :class:`~dr_fdsl.render.structures.Fragments`; the tests check the two bit for bit. The renderer
composites only the occupied slots (:func:`rasterize_list`), which the sort backend makes without the dense tensors.
"""

from __future__ import annotations

from collections.abc import Callable

from dr_fdsl.registry import Registry
from dr_fdsl.render.raster_pytorch3d import rasterize
from dr_fdsl.render.raster_sort import rasterize_sorted, rasterize_sorted_list
from dr_fdsl.render.structures import FragmentList, Fragments

# RASTERIZERS.get(name): an unknown name is a config error naming the key, never a silent fallback.
RASTERIZERS: Registry[Callable[..., Fragments]] = Registry("rasteriser", "renderer.raster_backend")
RASTERIZERS.register("pytorch3d", rasterize)
RASTERIZERS.register("sort", rasterize_sorted)


def auto_backend(device_type: str) -> str:
    """The fastest backend that is exact on a device: ``sort`` on the CPU (PyTorch3D's CPU kernel costs pixels x
    points per image, single-threaded; sort was ~30x faster at 64 px), ``pytorch3d``'s binned kernel elsewhere."""
    return "sort" if device_type == "cpu" else "pytorch3d"


@RASTERIZERS.register("auto")
def rasterize_auto(points, radii, image_size: int, points_per_pixel: int) -> Fragments:
    """``renderer.raster_backend: auto`` (the default): :func:`auto_backend` for the points' device. Both give the
    same fragments bit for bit (tests/test_render.py), so the choice changes no pixel."""
    backend = RASTERIZERS.get(auto_backend(points.device.type))
    return backend(points, radii, image_size, points_per_pixel)


# Backends that list the occupied slots themselves; any other backend's dense fragments are listed after it.
_LISTING = {"sort": rasterize_sorted_list}


def rasterize_list(backend: str, points, radii, image_size: int, points_per_pixel: int) -> FragmentList:
    """The occupied slots (:class:`FragmentList`) of ``RASTERIZERS.get(backend)``'s fragments."""
    if backend == "auto":
        backend = auto_backend(points.device.type)
    if backend in _LISTING:
        return _LISTING[backend](points, radii, image_size, points_per_pixel)
    return FragmentList.of(RASTERIZERS.get(backend)(points, radii, image_size, points_per_pixel))

"""The differentiable point renderer, family-agnostic: PyTorch3D-compatible rasterisation and compositing.

Modules: ``types`` (Scene, Fragments, constants), ``raster_pytorch3d`` and ``raster_sort`` (the two rasterisers,
registered by name in ``rasterizers``), ``composite`` (weights, compositing, ``render_scene``), ``views`` and
``augment`` (cameras and point augmentations drawn per image), ``random`` and ``streams`` (keyed randomness),
``renderer`` (``PointRenderer``: learnable colours and radii), ``grid`` (image grids).
"""

from dr_fdsl.render.composite import composite, fragment_weights, render_scene
from dr_fdsl.render.grid import image_grid, render_grid, save_grid
from dr_fdsl.render.rasterizers import RASTERIZERS, get_rasterizer
from dr_fdsl.render.renderer import PointRenderer, Rendered
from dr_fdsl.render.types import Fragments, Scene

__all__ = ["RASTERIZERS", "Fragments", "PointRenderer", "Rendered", "Scene", "composite", "fragment_weights",
           "get_rasterizer", "image_grid", "render_grid", "render_scene", "save_grid"]

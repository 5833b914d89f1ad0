"""The differentiable fractal renderer (PyTorch3D point rasterisation and compositing)."""

from dr_fdsl.render.grid import render_grid, save_grid
from dr_fdsl.render.points import Fragments, Scene, composite, fragment_weights, rasterize, render_scene
from dr_fdsl.render.renderer import FractalRenderer

__all__ = ["FractalRenderer", "Fragments", "Scene", "composite", "fragment_weights", "rasterize",
           "render_grid", "render_scene", "save_grid"]
